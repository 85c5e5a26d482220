//! What the recorder keeps in memory: every open connection's lifetime,
//! built from kernel events (opened, established, closing, closed, how it
//! ended, who held it), until it is handed to the store. A lifetime that
//! ended waits a moment for an RST the kernel reports after the CLOSE (an
//! abort sends it then); one that stays open is written as open after a
//! second, so the store always holds what is open. No I/O but /proc reads
//! for exe and cgroup names.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
};

use netstat_common::tcp_state::*;

use crate::{
    model::{
        Change, Connection, IdHasher, IdMap, Owner, OwnerSource, Proto, SockEvent, SockId,
        history::{End, FinFirst, Recorded},
    },
    sources::{cgroup::Cgroups, owners::ExeCache},
};

/// How long an ended lifetime waits for a late RST event.
pub const GRACE_NS: u64 = 200_000_000;
/// An open lifetime older than this is written as open.
pub const WRITE_OPEN_AFTER_NS: u64 = 1_000_000_000;

struct Live {
    rec: Recorded,
    /// Ended: waits in `ended` for its grace period.
    closed: bool,
    /// CLOCK_MONOTONIC ns of its first event (or of the seed).
    seen_ns: u64,
    reset: Option<bool>,
    error: u32,
}

pub struct Lifetimes {
    /// Open, and ended within `GRACE_NS` (`Live::closed`), boxed: a
    /// lifetime moves once, into the batch.
    open: IdMap<Box<Live>>,
    /// Ended, in close order, waiting out `GRACE_NS`.
    ended: VecDeque<(u64, SockId)>,
    /// Open and not written yet, oldest first.
    unwritten: VecDeque<(u64, SockId)>,
    /// Written open, changed since.
    dirty: HashSet<SockId, std::hash::BuildHasherDefault<IdHasher>>,
    next_id: i64,
    clock_offset_ns: i128,
    proc_root: PathBuf,
    cgroups: Cgroups,
    exes: ExeCache,
    /// Events without a socket cookie (no identity to follow).
    pub no_cookie: u64,
}

fn unix_us(mono_ns: u64, offset: i128) -> i64 {
    ((mono_ns as i128 + offset) / 1000) as i64
}

impl Lifetimes {
    pub fn new(next_id: i64, clock_offset_ns: i128, proc_root: &Path, runtime_root: &Path) -> Lifetimes {
        Lifetimes {
            open: IdMap::default(),
            ended: VecDeque::new(),
            unwritten: VecDeque::new(),
            dirty: HashSet::default(),
            next_id,
            clock_offset_ns,
            proc_root: proc_root.to_path_buf(),
            cgroups: Cgroups::new(proc_root, runtime_root),
            exes: ExeCache::new(proc_root),
            no_cookie: 0,
        }
    }

    /// CLOCK_REALTIME - CLOCK_MONOTONIC from now on (resampled by the
    /// recorder, so a wall-clock step dates later events by the new clock).
    pub fn set_clock(&mut self, offset_ns: i128) {
        self.clock_offset_ns = offset_ns;
    }

    fn alloc_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// An event's owner with what the store keeps of it: exe (read once per
    /// process, while it lives) and cgroup names.
    fn owner_of(&mut self, e: &SockEvent) -> Option<Owner> {
        let mut o = e.owner.clone()?;
        self.exes.note(o.pid, o.pid_start);
        self.exes.fill(&mut o);
        if let Some(id) = o.cgroup_id {
            o.cgroup = Some(self.cgroups.resolve(&self.proc_root, id, o.pid));
        }
        o.tid = None;
        Some(o)
    }

    fn fresh(&mut self, e: &SockEvent, t: i64) -> Box<Live> {
        let id = self.alloc_id();
        let conn = Connection {
            proto: e.proto,
            ipv6: e.ipv6,
            local: e.local,
            remote: e.remote,
            state: None,
            id: e.id,
            inode: 0,
            uid: e.uid,
            offloaded: false,
            owner: None,
        };
        self.unwritten.push_back((e.ts_ns, e.id));
        Box::new(Live {
            closed: false,
            rec: Recorded {
                id,
                conn,
                opened_us: t,
                before_recording: false,
                passive: false,
                established_after_us: None,
                closing_after_us: None,
                closed_us: None,
                end: End::Open,
                fin_first: None,
                bytes_sent: None,
                bytes_received: None,
                holders: Vec::new(),
                handed_over: false,
            stored: false,
            host: None,
            },
            seen_ns: e.ts_ns,
            reset: None,
            error: 0,
        })
    }

    /// The open lifetime of `key` (not one that ended).
    fn live(&mut self, key: &SockId) -> Option<&mut Box<Live>> {
        self.open.get_mut(key).filter(|l| !l.closed)
    }

    fn is_open(&self, key: &SockId) -> bool {
        self.open.get(key).is_some_and(|l| !l.closed)
    }

    /// Ended at CLOCK_MONOTONIC `ts`: out of the open set, due after the grace.
    fn end(&mut self, key: SockId, mut live: Box<Live>, ts: u64) {
        live.closed = true;
        self.dirty.remove(&key);
        self.ended.push_back((ts, key));
        self.open.insert(key, live);
    }

    /// Take in one kernel event.
    pub fn apply(&mut self, e: &SockEvent) {
        if e.id.cookie == 0 {
            self.no_cookie += 1;
            return;
        }
        let t = unix_us(e.ts_ns, self.clock_offset_ns);
        let key = e.id;
        match e.change {
            Change::TcpState { old, new } if new == CLOSE => {
                let mut live = match self.open.remove(&key) {
                    Some(l) if !l.closed => l,
                    _ => {
                        let mut l = self.fresh(e, t);
                        l.rec.before_recording = old != SYN_SENT;
                        l
                    }
                };
                let r = &mut live.rec;
                r.closed_us = Some(t.max(r.opened_us));
                r.conn.state = Some(if e.ends_in_time_wait() { TIME_WAIT } else { old });
                if e.local.port() != 0 {
                    r.conn.local = e.local;
                }
                if let Some(l) = e.lifetime {
                    r.bytes_sent = Some(l.bytes_sent);
                    r.bytes_received = Some(l.bytes_received);
                    live.error = l.error;
                }
                if live.rec.conn.owner.is_none() {
                    live.rec.conn.owner = self.owner_of(e);
                    live.rec.conn.uid = e.uid;
                }
                self.end(key, live, e.ts_ns);
            }
            Change::TcpState { old, new } => {
                let fresh = !self.is_open(&key);
                if fresh {
                    let mut l = self.fresh(e, t);
                    l.rec.passive = old == LISTEN || new == SYN_RECV;
                    l.rec.before_recording = !(old == CLOSE || old == LISTEN && new == SYN_RECV);
                    self.open.insert(key, l);
                }
                let needs_owner = {
                    let live = self.open.get(&key).expect("inserted above");
                    let live = &**live;
                    match (&live.rec.conn.owner, &e.owner) {
                        (None, Some(_)) => true,
                        (Some(h), Some(o)) => !h.same_process(o.pid, o.pid_start) && o.source != OwnerSource::Listener && h.source == OwnerSource::Listener,
                        _ => false,
                    }
                };
                let owner = if needs_owner { self.owner_of(e) } else { None };
                let live = self.live(&key).expect("inserted above");
                let r = &mut live.rec;
                r.conn.state = Some(new);
                r.conn.local = e.local;
                r.conn.remote = e.remote;
                let since = t - r.opened_us;
                if new == ESTABLISHED && r.established_after_us.is_none() {
                    r.established_after_us = Some(since.max(0));
                }
                if matches!(old, ESTABLISHED | SYN_RECV | SYN_SENT) && matches!(new, FIN_WAIT1 | CLOSE_WAIT) {
                    r.closing_after_us.get_or_insert(since.max(0));
                    r.fin_first.get_or_insert(if new == FIN_WAIT1 { FinFirst::Local } else { FinFirst::Remote });
                }
                if let Some(o) = owner {
                    r.conn.owner = Some(o);
                    r.conn.uid = e.uid;
                }
                if live.rec.stored && !fresh {
                    self.dirty.insert(key);
                }
            }
            Change::Accept => {
                let owner = self.owner_of(e);
                // A connection reset before accept() returned is accepted
                // closed: the acceptor is its holder all the same.
                if !self.open.contains_key(&key) {
                    let mut l = self.fresh(e, t);
                    l.rec.passive = true;
                    l.rec.before_recording = true;
                    l.rec.conn.state = Some(ESTABLISHED);
                    self.open.insert(key, l);
                }
                let live = self.open.get_mut(&key).expect("inserted above");
                if owner.is_some() {
                    live.rec.conn.owner = owner;
                    live.rec.conn.uid = e.uid;
                }
                if live.rec.stored && !live.closed {
                    self.dirty.insert(key);
                }
            }
            Change::Owner { state } => {
                let Some(owner) = self.owner_of(e) else { return };
                if !self.open.contains_key(&key) {
                    let mut l = self.fresh(e, t);
                    l.rec.before_recording = true;
                    l.rec.conn.state = (state != 0).then_some(state);
                    self.open.insert(key, l);
                }
                let live = self.open.get_mut(&key).expect("inserted above");
                let r = &mut live.rec;
                if let Some(prev) = r.conn.owner.take() {
                    if r.holders.is_empty() {
                        r.holders.push((r.opened_us, prev));
                    }
                    r.holders.push((t, owner.clone()));
                }
                r.conn.owner = Some(owner);
                r.conn.uid = e.uid;
                r.handed_over = !r.holders.is_empty();
                if live.rec.stored && !live.closed {
                    self.dirty.insert(key);
                }
            }
            Change::Reset { sent, .. } => {
                if let Some(l) = self.open.get_mut(&key) {
                    l.reset.get_or_insert(sent);
                }
            }
            Change::UdpBind { .. } | Change::UdpConnect => {
                if !self.is_open(&key) {
                    let mut l = self.fresh(e, t);
                    // A connect on a socket bound before we looked.
                    l.rec.before_recording = matches!(e.change, Change::UdpConnect);
                    l.rec.conn.proto = Proto::Udp;
                    self.open.insert(key, l);
                }
                let owner = self.owner_of(e);
                let live = self.live(&key).expect("inserted above");
                let r = &mut live.rec;
                if e.local.port() != 0 || matches!(e.change, Change::UdpBind { .. }) {
                    r.conn.local = e.local;
                }
                if matches!(e.change, Change::UdpConnect) {
                    r.conn.remote = e.remote;
                }
                if owner.is_some() {
                    r.conn.owner = owner;
                    r.conn.uid = e.uid;
                }
                if live.rec.stored {
                    self.dirty.insert(key);
                }
            }
            Change::UdpClose => {
                let mut live = match self.open.remove(&key) {
                    Some(l) if !l.closed => l,
                    _ => {
                        let mut l = self.fresh(e, t);
                        l.rec.before_recording = true;
                        l.rec.conn.proto = Proto::Udp;
                        l
                    }
                };
                live.rec.closed_us = Some(t.max(live.rec.opened_us));
                if live.rec.conn.owner.is_none() {
                    live.rec.conn.owner = self.owner_of(e);
                    live.rec.conn.uid = e.uid;
                }
                self.end(key, live, e.ts_ns);
            }
            Change::Unknown(_) => {}
        }
    }

    /// Sockets open when recording started (a sock_diag snapshot with
    /// owners): a row the last recording left open continues when its
    /// socket is still there (`resumed`); the rest of `resumed` ended while
    /// nobody recorded, and is returned closed at `gap_start_us`.
    pub fn seed(
        &mut self,
        snapshot: Vec<Connection>,
        mut resumed: HashMap<SockId, Recorded>,
        stale: Vec<Recorded>,
        gap_start_us: Option<i64>,
        now_ns: u64,
    ) -> Vec<Recorded> {
        let now = unix_us(now_ns, self.clock_offset_ns);
        for mut c in snapshot {
            if c.id.cookie == 0 {
                continue;
            }
            // Events since the tracer started know better.
            if self.open.contains_key(&c.id) {
                resumed.remove(&c.id);
                continue;
            }
            if let Some(o) = c.owner.as_mut() {
                if let Some(id) = o.cgroup_id {
                    o.cgroup = Some(self.cgroups.resolve(&self.proc_root, id, o.pid));
                }
            }
            let rec = match resumed.remove(&c.id) {
                Some(mut r) => {
                    r.conn.state = c.state.or(r.conn.state);
                    if c.owner.is_some() && !r.conn.owner.as_ref().zip(c.owner.as_ref()).is_some_and(|(a, b)| a.same_process(b.pid, b.pid_start)) {
                        r.conn.owner = c.owner.take();
                        r.conn.uid = c.uid;
                    }
                    r
                }
                None => {
                    let id = self.alloc_id();
                    let state = c.state;
                    let time_wait = state == Some(TIME_WAIT);
                    let r = Recorded {
                        id,
                        opened_us: now,
                        before_recording: true,
                        passive: false,
                        established_after_us: (state == Some(ESTABLISHED)).then_some(0),
                        closing_after_us: state.filter(|s| ![ESTABLISHED, LISTEN, SYN_SENT, SYN_RECV].contains(s)).map(|_| 0),
                        // Listed for its TIME_WAIT's rest, as far as we know.
                        closed_us: time_wait.then_some(now),
                        end: if time_wait { End::FinLocal } else { End::Open },
                        fin_first: time_wait.then_some(FinFirst::Local),
                        bytes_sent: None,
                        bytes_received: None,
                        holders: Vec::new(),
                        handed_over: false,
                        stored: false,
                        host: None,
                        conn: c,
                    };
                    r
                }
            };
            let key = rec.conn.id;
            let live = Box::new(Live { rec, closed: false, seen_ns: now_ns, reset: None, error: 0 });
            if live.rec.closed_us.is_some() {
                self.end(key, live, now_ns);
            } else {
                if !live.rec.stored {
                    self.unwritten.push_back((now_ns, key));
                }
                self.open.insert(key, live);
            }
        }
        // Ended while nobody recorded: when is not known.
        let mut gone: Vec<Recorded> = resumed.into_values().chain(stale).collect();
        for r in &mut gone {
            r.closed_us = Some(gap_start_us.unwrap_or(r.opened_us).max(r.opened_us));
            r.end = End::Unknown;
        }
        gone.sort_by_key(|r| r.id);
        gone
    }

    /// What is due for the store at CLOCK_MONOTONIC `now_ns` (everything,
    /// open rows included, when `all`).
    pub fn flush(&mut self, now_ns: u64, all: bool, out: &mut Vec<Recorded>) {
        while let Some(&(ts, key)) = self.ended.front() {
            if !all && ts + GRACE_NS > now_ns {
                break;
            }
            self.ended.pop_front();
            if !self.open.get(&key).is_some_and(|l| l.closed) {
                continue;
            }
            if let Some(mut live) = self.open.remove(&key) {
                if live.rec.end == End::Open {
                    live.rec.end = end_of(&live);
                }
                out.push(live.rec);
            }
        }
        while let Some(&(ts, key)) = self.unwritten.front() {
            if !all && ts + WRITE_OPEN_AFTER_NS > now_ns {
                break;
            }
            self.unwritten.pop_front();
            if let Some(live) = self.live(&key) {
                if !live.rec.stored && live.seen_ns == ts {
                    out.push(live.rec.clone());
                    live.rec.stored = true;
                }
            }
        }
        let dirty: Vec<SockId> = self.dirty.drain().collect();
        for key in dirty {
            if let Some(live) = self.live(&key) {
                out.push(live.rec.clone());
                live.rec.stored = true;
            }
        }
    }
}

/// How a closed lifetime ended: a reset first, then a timeout, then the
/// side that sent the first FIN.
fn end_of(l: &Live) -> End {
    let r = &l.rec;
    if r.conn.proto == Proto::Udp || r.conn.state == Some(LISTEN) {
        return End::Closed;
    }
    match l.reset {
        Some(true) => return End::RstSent,
        Some(false) => return End::RstReceived,
        None => {}
    }
    match l.error as i32 {
        libc::ETIMEDOUT => return End::Timeout,
        libc::ECONNREFUSED | libc::ECONNRESET => return End::RstReceived,
        _ => {}
    }
    match r.fin_first {
        Some(FinFirst::Local) => End::FinLocal,
        Some(FinFirst::Remote) => End::FinRemote,
        None => End::Closed,
    }
}
