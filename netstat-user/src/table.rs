//! The live connection table: seeded from a kernel snapshot, kept current by
//! the tracer's events, reconciled with fresh snapshots so that lost events
//! can never leave stale or missing rows. Bounded: closed rows beyond the cap
//! are dropped oldest first, and counted. Knows nothing of output formats.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use netstat_common::{Event, IPPROTO_UDP, flags, kind, tcp_state};

pub use crate::model::Proto;
use crate::stream::{local_addr, remote_addr};

/// A connection's identity inside one network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerSource {
    /// Captured in the kernel when the owner acted on the socket.
    Kernel,
    /// Inferred from /proc/*/fd when the table was seeded or reconciled.
    Proc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOwner {
    pub pid: u32,
    /// Raw comm bytes (escape before printing).
    pub comm: Vec<u8>,
    pub source: OwnerSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: ConnKey,
    /// Kernel TCP state number; None for UDP.
    pub state: Option<u32>,
    pub owner: Option<RowOwner>,
    /// CLOCK_MONOTONIC ns when first seen (0 = predates the table).
    pub opened_ns: u64,
    /// Last event or snapshot that confirmed the row.
    pub seen_ns: u64,
    pub inode: u64,
    pub uid: u32,
    /// Kernel TLS device offload, as the last snapshot saw it.
    pub offloaded: bool,
    /// The reconcile generation that last found the row in a snapshot.
    confirmed: u32,
}

/// A connection that opened and/or closed since the last display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedRow {
    pub key: ConnKey,
    pub final_state: Option<u32>,
    pub owner: Option<RowOwner>,
    pub opened_ns: u64,
    pub closed_ns: u64,
    /// How long it lived, when the kernel could tell.
    pub lived_ns: Option<u64>,
}

/// What a snapshot reader hands the table.
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub key: ConnKey,
    pub state: Option<u32>,
    pub inode: u64,
    pub uid: u32,
    pub offloaded: bool,
    pub owner: Option<(u32, Vec<u8>)>,
}

pub struct Table {
    rows: HashMap<ConnKey, Row>,
    by_sock: HashMap<u64, ConnKey>,
    closed: VecDeque<ClosedRow>,
    /// Keys closed since the last reconcile, so a snapshot taken just before
    /// the close cannot resurrect them.
    recently_closed: HashMap<ConnKey, u64>,
    netns: u32,
    max_rows: usize,
    /// Generation of the current reconcile (see `Row::confirmed`).
    generation: u32,
    /// TIME_WAIT rows oldest first: the first to go when live rows hit the cap.
    time_wait: VecDeque<ConnKey>,
    /// Rows dropped because of the cap (closed rows, then TIME_WAIT rows,
    /// then new rows refused).
    pub dropped: u64,
    pub lost_events: u64,
    /// Wall-clock RFC 3339 time of the first loss.
    pub lost_since: Option<String>,
    /// `lost_events` by the kernel's reason (ring_full, recursion, ...).
    pub lost_by_reason: std::collections::BTreeMap<&'static str, u64>,
}

fn key_of(e: &Event) -> ConnKey {
    let udp = e.protocol == IPPROTO_UDP || matches!(e.kind, kind::UDP_BIND | kind::UDP_CONNECT | kind::UDP_CLOSE);
    ConnKey { proto: if udp { Proto::Udp } else { Proto::Tcp }, local: local_addr(e), remote: remote_addr(e) }
}

fn owner_of(e: &Event) -> Option<RowOwner> {
    if e.flags & flags::OWNER_MASK == flags::OWNER_NONE {
        return None;
    }
    let end = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    Some(RowOwner { pid: e.tgid, comm: e.comm[..end].to_vec(), source: OwnerSource::Kernel })
}

impl Table {
    /// `netns`: our network namespace inode; events from others are ignored (0 = accept all).
    pub fn new(netns: u32, max_rows: usize) -> Table {
        Table {
            rows: HashMap::new(),
            by_sock: HashMap::new(),
            closed: VecDeque::new(),
            recently_closed: HashMap::new(),
            netns,
            max_rows,
            time_wait: VecDeque::new(),
            generation: 0,
            dropped: 0,
            lost_events: 0,
            lost_since: None,
            lost_by_reason: Default::default(),
        }
    }

    pub fn live(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Closed rows since the last call, oldest first.
    pub fn take_closed(&mut self) -> Vec<ClosedRow> {
        self.closed.drain(..).collect()
    }

    pub fn note_lost(&mut self, reason: &'static str, count: u64, when: impl FnOnce() -> String) {
        self.lost_events += count;
        *self.lost_by_reason.entry(reason).or_default() += count;
        if self.lost_since.is_none() {
            self.lost_since = Some(when());
        }
    }

    fn enforce_cap(&mut self) {
        while self.rows.len() + self.closed.len() > self.max_rows && !self.closed.is_empty() {
            self.closed.pop_front();
            self.dropped += 1;
        }
    }

    /// Room for one more live row? Makes it by dropping a closed row, then
    /// the oldest TIME_WAIT row; otherwise the new row is refused (counted).
    fn admit(&mut self) -> bool {
        while self.rows.len() + self.closed.len() >= self.max_rows {
            if self.closed.pop_front().is_some() {
                self.dropped += 1;
                continue;
            }
            match self.time_wait.pop_front() {
                Some(k) => {
                    if self.rows.get(&k).is_some_and(|r| r.state == Some(tcp_state::TIME_WAIT)) {
                        self.rows.remove(&k);
                        self.dropped += 1;
                    }
                }
                None => {
                    self.dropped += 1;
                    return false;
                }
            }
        }
        true
    }

    /// Insert a new live row if the cap allows.
    fn insert_row(&mut self, row: Row) {
        if self.rows.contains_key(&row.key) || self.admit() {
            if row.state == Some(tcp_state::TIME_WAIT) {
                self.time_wait.push_back(row.key);
            }
            self.rows.insert(row.key, row);
        }
    }

    fn push_closed(&mut self, c: ClosedRow) {
        self.recently_closed.insert(c.key, c.closed_ns);
        self.closed.push_back(c);
        self.enforce_cap();
    }

    fn close_row(&mut self, key: &ConnKey, final_state: Option<u32>, now: u64, lived: Option<u64>, ev_owner: Option<RowOwner>) {
        let row = self.rows.remove(key);
        let (owner, opened) = match &row {
            Some(r) => (r.owner.clone().or(ev_owner), r.opened_ns),
            None => (ev_owner, lived.map(|l| now.saturating_sub(l)).unwrap_or(0)),
        };
        self.push_closed(ClosedRow { key: *key, final_state, owner, opened_ns: opened, closed_ns: now, lived_ns: lived });
    }

    /// Apply one kernel event.
    pub fn apply(&mut self, e: &Event) {
        if self.netns != 0 && e.netns != 0 && e.netns != self.netns {
            return;
        }
        let key = key_of(e);
        let owner = owner_of(e);
        // A socket's tuple changes (port chosen, UDP connect): re-key by socket.
        if let Some(old_key) = self.by_sock.get(&e.sock).copied() {
            if old_key != key {
                if let Some(mut row) = self.rows.remove(&old_key) {
                    row.key = key;
                    self.rows.insert(key, row);
                }
            }
        }
        match e.kind {
            kind::TCP_STATE => self.apply_tcp(e, key, owner),
            kind::TCP_ACCEPT => {
                if let Some(row) = self.rows.get_mut(&key) {
                    row.owner = owner;
                    row.seen_ns = e.ts_ns;
                }
            }
            kind::UDP_BIND | kind::UDP_CONNECT => {
                self.insert_row(Row {
                    key,
                    state: None,
                    owner: None,
                    opened_ns: e.ts_ns,
                    seen_ns: e.ts_ns,
                    inode: 0,
                    uid: e.uid,
                    offloaded: false,
                    confirmed: 0,
                });
                if let Some(row) = self.rows.get_mut(&key) {
                    row.owner = owner.or(row.owner.take());
                    row.seen_ns = e.ts_ns;
                    self.by_sock.insert(e.sock, key);
                }
                self.recently_closed.remove(&key);
            }
            kind::UDP_CLOSE => {
                self.by_sock.remove(&e.sock);
                self.close_row(&key, None, e.ts_ns, None, owner);
            }
            _ => {}
        }
        self.enforce_cap();
    }

    fn apply_tcp(&mut self, e: &Event, key: ConnKey, owner: Option<RowOwner>) {
        use tcp_state::*;
        let (old, new) = (e.old_state, e.new_state);
        if new == CLOSE {
            self.by_sock.remove(&e.sock);
            let lived = (e.flags & flags::HAS_LIFETIME != 0 && e.duration_ns != 0).then_some(e.duration_ns);
            // An active close ends in TIME_WAIT: the kernel swaps in a
            // timewait socket silently. Keep the row as netstat shows it
            // (PID 0); the next reconcile drops it when the kernel does.
            let time_wait = matches!(old, FIN_WAIT2 | CLOSING);
            let final_state = if time_wait { TIME_WAIT } else { CLOSE };
            // A listener closing never was a connection: don't list it as one.
            if old == LISTEN {
                self.rows.remove(&key);
            } else {
                self.close_row(&key, Some(final_state), e.ts_ns, lived, owner);
            }
            if time_wait {
                self.insert_row(Row {
                    key,
                    state: Some(TIME_WAIT),
                    owner: None,
                    opened_ns: e.ts_ns,
                    seen_ns: e.ts_ns,
                    inode: 0,
                    uid: 0,
                    offloaded: false,
                    confirmed: 0,
                });
            }
            return;
        }
        self.recently_closed.remove(&key);
        self.insert_row(Row {
            key,
            state: None,
            owner: None,
            opened_ns: e.ts_ns,
            seen_ns: e.ts_ns,
            inode: 0,
            uid: e.uid,
            offloaded: false,
            confirmed: 0,
        });
        let Some(row) = self.rows.get_mut(&key) else { return };
        row.state = Some(new);
        row.seen_ns = e.ts_ns;
        if owner.is_some() {
            row.owner = owner;
        }
        self.by_sock.insert(e.sock, key);
    }

    /// Seed or reconcile from a snapshot started at CLOCK_MONOTONIC `started_ns`.
    /// Rows no event touched since `started_ns` and absent from the snapshot
    /// are stale (their close was lost): removed. Snapshot rows missing from
    /// the table are added unless closed after the snapshot began.
    pub fn reconcile(&mut self, snapshot: impl IntoIterator<Item = SnapshotRow>, started_ns: u64) -> ReconcileStats {
        let mut stats = ReconcileStats::default();
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let snapshot = snapshot.into_iter();
        // Grow once, not by doubling through a large seed.
        let want = snapshot.size_hint().0.min(self.max_rows);
        self.rows.reserve(want.saturating_sub(self.rows.len()));
        for s in snapshot {
            match self.rows.get_mut(&s.key) {
                Some(row) => {
                    row.confirmed = generation;
                    if row.seen_ns < started_ns {
                        if row.state != s.state {
                            stats.corrected += 1;
                        }
                        row.state = s.state;
                    }
                    row.inode = s.inode;
                    row.uid = s.uid;
                    row.offloaded = s.offloaded;
                    if row.owner.is_none() {
                        row.owner = s.owner.map(|(pid, comm)| RowOwner { pid, comm, source: OwnerSource::Proc });
                    }
                }
                None => {
                    if self.recently_closed.get(&s.key).is_some_and(|&t| t >= started_ns) {
                        continue;
                    }
                    stats.added += 1;
                    self.insert_row(
                        Row {
                            confirmed: generation,
                            key: s.key,
                            state: s.state,
                            owner: s.owner.map(|(pid, comm)| RowOwner { pid, comm, source: OwnerSource::Proc }),
                            opened_ns: 0,
                            seen_ns: started_ns,
                            inode: s.inode,
                            uid: s.uid,
                            offloaded: s.offloaded,
                        },
                    );
                }
            }
        }
        let stale: Vec<ConnKey> = self
            .rows
            .values()
            .filter(|r| r.seen_ns < started_ns && r.confirmed != generation)
            .map(|r| r.key)
            .collect();
        for k in stale {
            self.rows.remove(&k);
            stats.removed += 1;
        }
        self.by_sock.retain(|_, k| self.rows.contains_key(k));
        self.time_wait.retain(|k| self.rows.get(k).is_some_and(|r| r.state == Some(tcp_state::TIME_WAIT)));
        self.recently_closed.clear();
        self.enforce_cap();
        stats
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileStats {
    pub added: u64,
    pub removed: u64,
    pub corrected: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstat_common::{AF_INET, IPPROTO_TCP};
    use tcp_state::*;

    fn ev(sock: u64, sport: u16, dport: u16, old: u32, new: u32, ts: u64, pid: u32) -> Event {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.flags = flags::OWNER_CAPTURED;
        e.ts_ns = ts;
        e.tgid = pid;
        e.comm[..3].copy_from_slice(b"cli");
        e.sock = sock;
        e.family = AF_INET;
        e.protocol = IPPROTO_TCP;
        e.sport = sport;
        e.dport = dport;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.old_state = old;
        e.new_state = new;
        e
    }

    fn key(l: u16, r: u16) -> ConnKey {
        ConnKey { proto: Proto::Tcp, local: format!("127.0.0.1:{l}").parse().unwrap(), remote: format!("127.0.0.1:{r}").parse().unwrap() }
    }

    #[test]
    fn connection_lifecycle_rekeys_and_closes_into_time_wait() {
        let mut t = Table::new(0, 100);
        t.apply(&ev(1, 0, 80, CLOSE, SYN_SENT, 10, 7));
        t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 11, 7));
        assert_eq!(t.len(), 1);
        let r = t.live().next().unwrap();
        assert_eq!(r.key, key(5000, 80));
        assert_eq!(r.state, Some(ESTABLISHED));
        assert_eq!(r.owner.as_ref().unwrap().pid, 7);
        t.apply(&ev(1, 5000, 80, ESTABLISHED, FIN_WAIT1, 12, 7));
        t.apply(&ev(1, 5000, 80, FIN_WAIT1, FIN_WAIT2, 13, 7));
        let mut fin = ev(1, 5000, 80, FIN_WAIT2, CLOSE, 14, 7);
        fin.flags |= flags::HAS_LIFETIME;
        fin.duration_ns = 4;
        t.apply(&fin);
        let closed = t.take_closed();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].final_state, Some(TIME_WAIT));
        assert_eq!(closed[0].lived_ns, Some(4));
        assert_eq!(closed[0].owner.as_ref().unwrap().pid, 7);
        let tw = t.live().next().unwrap();
        assert_eq!((tw.state, tw.owner.is_none()), (Some(TIME_WAIT), true));
        assert!(t.take_closed().is_empty());
    }

    #[test]
    fn reconcile_removes_stale_and_adds_missing() {
        let mut t = Table::new(0, 100);
        t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7)); // its close will be "lost"
        t.apply(&ev(2, 5001, 80, SYN_SENT, ESTABLISHED, 30, 7)); // newer than the snapshot
        let snap = vec![SnapshotRow { key: key(6000, 22), state: Some(ESTABLISHED), inode: 9, uid: 0, offloaded: false, owner: Some((3, b"sshd".to_vec())) }];
        let s = t.reconcile(snap, 20);
        assert_eq!((s.added, s.removed), (1, 1));
        let mut keys: Vec<ConnKey> = t.live().map(|r| r.key).collect();
        keys.sort();
        assert_eq!(keys, vec![key(5001, 80), key(6000, 22)]);
        let sshd = t.live().find(|r| r.key == key(6000, 22)).unwrap();
        assert_eq!(sshd.owner.as_ref().unwrap().source, OwnerSource::Proc);
    }

    #[test]
    fn snapshot_cannot_resurrect_a_connection_closed_after_it_began() {
        let mut t = Table::new(0, 100);
        t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7));
        t.apply(&ev(1, 5000, 80, ESTABLISHED, CLOSE, 25, 7));
        let snap = vec![SnapshotRow { key: key(5000, 80), state: Some(ESTABLISHED), inode: 1, uid: 0, offloaded: false, owner: None }];
        t.reconcile(snap, 20);
        assert!(t.is_empty());
    }

    #[test]
    fn cap_drops_closed_rows_oldest_first_and_counts() {
        let mut t = Table::new(0, 3);
        for i in 0..10u16 {
            t.apply(&ev(i as u64, 5000 + i, 80, SYN_SENT, ESTABLISHED, 10, 7));
            t.apply(&ev(i as u64, 5000 + i, 80, ESTABLISHED, CLOSE, 11, 7));
        }
        assert_eq!(t.dropped, 7);
        let closed = t.take_closed();
        assert_eq!(closed.len(), 3);
        assert_eq!(closed[0].key, key(5007, 80));
    }

    #[test]
    fn cap_holds_for_live_rows_too() {
        let mut t = Table::new(0, 4);
        for i in 0..10u16 {
            t.apply(&ev(i as u64, 5000 + i, 80, SYN_SENT, ESTABLISHED, 10, 7));
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.dropped, 6);
        // TIME_WAIT rows make room for live ones, oldest first.
        let mut t = Table::new(0, 3);
        for i in 0..3u16 {
            t.apply(&ev(i as u64, 6000 + i, 80, FIN_WAIT2, CLOSE, 10, 7));
            t.take_closed();
        }
        t.apply(&ev(9, 7000, 80, SYN_SENT, ESTABLISHED, 11, 7));
        assert_eq!(t.len(), 3);
        assert!(t.live().any(|r| r.key == key(7000, 80)));
        assert!(!t.live().any(|r| r.key == key(6000, 80)));
    }

    #[test]
    fn other_namespaces_are_ignored() {
        let mut t = Table::new(42, 100);
        let mut e = ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7);
        e.netns = 43;
        t.apply(&e);
        assert!(t.is_empty());
        e.netns = 42;
        t.apply(&e);
        assert_eq!(t.len(), 1);
    }
}
