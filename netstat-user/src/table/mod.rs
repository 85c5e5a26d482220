//! The live connection table: seeded from a kernel snapshot, kept current by
//! the tracer's events, reconciled with fresh snapshots so that lost events
//! can never leave stale or missing rows. Rows are keyed by socket identity
//! (network namespace + socket cookie), never by 4-tuple. Bounded: closed
//! rows beyond the cap are dropped oldest first, and counted. Reads and
//! writes the connection model only; knows nothing of output formats.
pub mod lifetimes;
use std::collections::{BTreeMap, HashMap, VecDeque};

use netstat_common::tcp_state;

use crate::model::{Change, ClosedConnection, Connection, Owner, OwnerSource, Proto, SockEvent, SockId};

struct Row {
    conn: Connection,
    /// CLOCK_MONOTONIC ns when first seen (None = predates the table).
    opened_ns: Option<u64>,
    /// Last event or snapshot that confirmed the row.
    seen_ns: u64,
    /// The reconcile generation that last found the row in a snapshot.
    confirmed: u32,
    /// The last process that held the socket, kept when a snapshot finds
    /// it orphaned (the table then shows no owner): the closed row names it.
    /// Boxed: rarely set, and a row is per socket (issue 14's memory).
    last_owner: Option<Box<Owner>>,
    /// A snapshot found it held by no process: it keeps no owner.
    orphaned: bool,
    /// The owner was found in /proc after the kernel's one had let go of
    /// the socket: an event that only repeats the kernel's record
    /// (`captured`, `listener`) does not undo that; one made by a process
    /// acting on the socket does.
    verified: bool,
}

/// States a socket can be in after its process closed it (an orphan: inode
/// 0). A not yet accepted socket (also inode 0) is never in one of them.
fn after_close(state: Option<u32>) -> bool {
    use tcp_state::*;
    matches!(state, Some(FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK | TIME_WAIT))
}

/// `lost_by_reason` key for events whose socket the kernel could not name
/// (no cookie): the table cannot place them, so they count as lost.
pub const NO_COOKIE: &str = "no_cookie";

pub struct Table {
    rows: HashMap<SockId, Row>,
    closed: VecDeque<ClosedConnection>,
    /// Sockets closed since the last reconcile, so a snapshot taken just
    /// before the close cannot resurrect them.
    recently_closed: HashMap<SockId, u64>,
    netns: u32,
    max_rows: usize,
    generation: u32,
    /// TIME_WAIT rows oldest first: the first to go when live rows hit the cap.
    time_wait: VecDeque<SockId>,
    /// Rows dropped because of the cap (closed rows, then TIME_WAIT rows,
    /// then new rows refused).
    pub dropped: u64,
    pub lost_events: u64,
    /// CLOCK_MONOTONIC ns of the first loss.
    pub lost_since_ns: Option<u64>,
    /// `lost_events` by reason (the kernel's ring_full, recursion, ...).
    pub lost_by_reason: BTreeMap<&'static str, u64>,
}

impl Table {
    /// `netns`: our network namespace inode; events from others are ignored
    /// (0 = accept all). Snapshot rows are this namespace's.
    pub fn new(netns: u32, max_rows: usize) -> Table {
        Table {
            rows: HashMap::new(),
            closed: VecDeque::new(),
            recently_closed: HashMap::new(),
            netns,
            max_rows,
            generation: 0,
            time_wait: VecDeque::new(),
            dropped: 0,
            lost_events: 0,
            lost_since_ns: None,
            lost_by_reason: BTreeMap::new(),
        }
    }

    pub fn live(&self) -> impl Iterator<Item = &Connection> {
        self.rows.values().map(|r| &r.conn)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Closed rows since the last call, oldest first. A connection that
    /// goes on in the table (its TIME_WAIT socket, same cookie) takes the
    /// table's state, so one display never shows it in two states: the
    /// kernel keeps an orphan closed in FIN_WAIT_2 as a timewait socket in
    /// FIN_WAIT_2 until the peer's FIN, which no event reports.
    pub fn take_closed(&mut self) -> Vec<ClosedConnection> {
        let rows = &self.rows;
        self.closed
            .drain(..)
            .map(|mut c| {
                if let Some(r) = rows.get(&c.conn.id).filter(|r| r.conn.proto == Proto::Tcp) {
                    c.conn.state = r.conn.state;
                }
                c
            })
            .collect()
    }

    /// Live rows some process holds by the table's account, with their
    /// socket inode (0 = not known): what a check against /proc verifies.
    pub fn held(&self) -> impl Iterator<Item = (SockId, u64, &Owner)> {
        self.rows.iter().filter_map(|(id, r)| Some((*id, r.conn.inode, r.conn.owner.as_ref()?)))
    }

    /// The holder /proc shows for row `id` (None: no process holds it): it
    /// keeps the creator the kernel saw.
    pub fn set_holder(&mut self, id: SockId, holder: Option<Owner>) {
        let Some(r) = self.rows.get_mut(&id) else { return };
        let creator = r.conn.owner.as_ref().and_then(|o| o.creator.clone());
        match holder {
            Some(mut h) => {
                h.creator = h.creator.or(creator);
                r.conn.owner = Some(h);
            }
            None => {
                if let Some(o) = r.conn.owner.take() {
                    r.last_owner = Some(Box::new(o));
                }
            }
        }
        r.verified = true;
    }

    pub fn note_lost(&mut self, reason: &'static str, count: u64, now_ns: u64) {
        self.lost_events += count;
        *self.lost_by_reason.entry(reason).or_default() += count;
        self.lost_since_ns.get_or_insert(now_ns);
    }

    fn enforce_cap(&mut self) {
        while self.rows.len() + self.closed.len() > self.max_rows && self.closed.pop_front().is_some() {
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
            let Some(id) = self.time_wait.pop_front() else {
                self.dropped += 1;
                return false;
            };
            if self.rows.get(&id).is_some_and(|r| r.conn.state == Some(tcp_state::TIME_WAIT)) {
                self.rows.remove(&id);
                self.dropped += 1;
            }
        }
        true
    }

    /// The row of `id`, made from `fresh` if there is none and the cap allows.
    fn row(&mut self, id: SockId, fresh: impl FnOnce() -> Row) -> Option<&mut Row> {
        if !self.rows.contains_key(&id) {
            if !self.admit() {
                return None;
            }
            let row = fresh();
            if row.conn.state == Some(tcp_state::TIME_WAIT) {
                self.time_wait.push_back(id);
            }
            self.rows.insert(id, row);
        }
        self.rows.get_mut(&id)
    }

    fn push_closed(&mut self, id: SockId, c: ClosedConnection) {
        self.recently_closed.insert(id, c.closed_ns);
        self.closed.push_back(c);
        self.enforce_cap();
    }

    /// Apply one kernel event.
    pub fn apply(&mut self, e: &SockEvent) {
        if !e.id.within(self.netns) {
            return;
        }
        if e.id.cookie == 0 {
            self.note_lost(NO_COOKIE, 1, e.ts_ns);
            return;
        }
        let id = SockId { netns: if e.id.netns == 0 { self.netns } else { e.id.netns }, cookie: e.id.cookie };
        match e.change {
            Change::TcpState { old, new } if new == tcp_state::CLOSE => self.tcp_closed(id, e, old),
            Change::TcpState { new, .. } => {
                self.recently_closed.remove(&id);
                if let Some(row) = self.row(id, || fresh_row(e, id)) {
                    row.conn.state = Some(new);
                    update(row, e);
                }
            }
            Change::Accept => {
                if let Some(row) = self.rows.get_mut(&id) {
                    update(row, e);
                }
            }
            // Another process sends or receives on it: it holds it now.
            Change::Owner { state } => {
                if let Some(row) = self.row(id, || fresh_row(e, id)) {
                    row.orphaned = false;
                    if state != 0 {
                        row.conn.state = Some(state);
                    }
                    update(row, e);
                }
            }
            Change::UdpBind { .. } | Change::UdpConnect => {
                self.recently_closed.remove(&id);
                if let Some(row) = self.row(id, || fresh_row(e, id)) {
                    update(row, e);
                }
            }
            Change::UdpClose => self.close_row(id, e, None),
            // The transition that follows says what the reset did.
            Change::Reset { .. } | Change::Unknown(_) => {}
        }
        self.enforce_cap();
    }

    fn tcp_closed(&mut self, id: SockId, e: &SockEvent, old: u32) {
        // A listener closing never was a connection: don't list it as one.
        if old == tcp_state::LISTEN {
            self.rows.remove(&id);
            return;
        }
        // An active close ends in TIME_WAIT: the kernel swaps in a timewait
        // socket with the same cookie. Keep it as netstat shows it (no
        // owner); the next reconcile drops it when the kernel does.
        let time_wait = e.ends_in_time_wait();
        let final_state = if time_wait { tcp_state::TIME_WAIT } else { tcp_state::CLOSE };
        self.close_row(id, e, Some(final_state));
        if time_wait {
            let mut tw = fresh_row(e, id);
            tw.conn.state = Some(tcp_state::TIME_WAIT);
            tw.conn.uid = None;
            self.row(id, || tw);
        }
    }

    fn close_row(&mut self, id: SockId, e: &SockEvent, final_state: Option<u32>) {
        let lived = e.lifetime.and_then(|l| l.duration_ns);
        let (mut conn, opened_ns, last_owner) = match self.rows.remove(&id) {
            Some(r) => (r.conn, r.opened_ns, r.last_owner),
            None => (fresh_row(e, id).conn, lived.map(|l| e.ts_ns.saturating_sub(l)), None),
        };
        conn.local = e.local;
        conn.remote = e.remote;
        conn.state = final_state;
        if conn.owner.is_none() {
            conn.owner = last_owner.map(|o| *o).or_else(|| e.owner.clone());
        }
        self.push_closed(id, ClosedConnection { conn, opened_ns, closed_ns: e.ts_ns, duration_ns: lived });
    }

    /// Seed or reconcile from a snapshot of this namespace started at
    /// CLOCK_MONOTONIC `started_ns`. Rows no event touched since
    /// `started_ns` and absent from the snapshot are stale (their close was
    /// lost): removed. Snapshot rows missing from the table are added
    /// unless closed after the snapshot began. Rows without a cookie (the
    /// /proc/net fallback) cannot be matched to events and are not taken.
    pub fn reconcile(&mut self, snapshot: impl IntoIterator<Item = Connection>, started_ns: u64) {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let snapshot = snapshot.into_iter();
        // Grow once, not by doubling through a large seed.
        let want = snapshot.size_hint().0.min(self.max_rows);
        self.rows.reserve(want.saturating_sub(self.rows.len()));
        for mut s in snapshot {
            if s.id.cookie == 0 {
                continue;
            }
            // One namespace: ours (rows from sock_diag carry no inode).
            // Every namespace (--all-namespaces): each row's own.
            if self.netns != 0 || s.id.netns == 0 {
                s.id.netns = self.netns;
            }
            let id = s.id;
            if let Some(row) = self.rows.get_mut(&id) {
                row.confirmed = generation;
                if row.seen_ns < started_ns {
                    row.conn.state = s.state;
                    row.conn.local = s.local;
                    row.conn.remote = s.remote;
                }
                row.conn.inode = s.inode;
                row.conn.uid = row.conn.uid.or(s.uid);
                row.conn.offloaded = s.offloaded;
                if s.proto == Proto::Tcp && s.inode == 0 && after_close(s.state) {
                    // No process holds it any more (PID 0 in the table).
                    row.orphaned = true;
                    if let Some(o) = row.conn.owner.take() {
                        row.last_owner = Some(Box::new(o));
                    }
                } else if row.conn.owner.is_none() {
                    row.conn.owner = s.owner;
                }
                continue;
            }
            if self.recently_closed.get(&id).is_some_and(|&t| t >= started_ns) {
                continue;
            }
            self.row(id, || Row {
                conn: s,
                opened_ns: None,
                seen_ns: started_ns,
                confirmed: generation,
                last_owner: None,
                orphaned: false,
                verified: false,
            });
        }
        self.rows.retain(|_, r| r.seen_ns >= started_ns || r.confirmed == generation);
        let rows = &self.rows;
        self.time_wait.retain(|id| rows.get(id).is_some_and(|r| r.conn.state == Some(tcp_state::TIME_WAIT)));
        self.recently_closed.clear();
        self.enforce_cap();
    }
}

fn fresh_row(e: &SockEvent, id: SockId) -> Row {
    Row {
        conn: Connection {
            proto: e.proto,
            ipv6: e.ipv6,
            local: e.local,
            remote: e.remote,
            state: None,
            id,
            inode: 0,
            uid: e.uid,
            offloaded: false,
            owner: None,
        },
        opened_ns: Some(e.ts_ns),
        seen_ns: e.ts_ns,
        confirmed: 0,
        last_owner: None,
        orphaned: false,
        verified: false,
    }
}

/// What every event tells about its socket: where it is now, when it was
/// last seen, and its owner when the event names one.
fn update(row: &mut Row, e: &SockEvent) {
    row.conn.local = e.local;
    row.conn.remote = e.remote;
    row.seen_ns = e.ts_ns;
    // An orphan stays without a holder whatever owner the kernel remembers,
    // and a holder found in /proc stays until a process acts on the socket.
    let Some(o) = e.owner.as_ref().filter(|_| !row.orphaned) else { return };
    if row.verified && !matches!(o.source, OwnerSource::Current) {
        return;
    }
    row.verified = false;
    row.conn.owner = Some(Owner { tid: None, ..o.clone() });
    row.conn.uid = e.uid;
}

#[cfg(test)]
mod tests;
