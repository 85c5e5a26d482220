use netstat_common::{AF_INET, Event, IPPROTO_TCP, flags, kind, tcp_state::*};

use super::*;
use crate::model::{Comm, OwnerSource, Proto};

const NS: u32 = 4026531840;

fn ev(cookie: u64, sport: u16, dport: u16, old: u32, new: u32, ts: u64, pid: u32) -> SockEvent {
    let mut e = Event::zeroed();
    e.kind = kind::TCP_STATE;
    e.flags = flags::OWNER_CAPTURED;
    e.ts_ns = ts;
    e.tgid = pid;
    e.comm[..3].copy_from_slice(b"cli");
    e.cookie = cookie;
    e.netns = NS;
    e.family = AF_INET;
    e.protocol = IPPROTO_TCP;
    e.sport = sport;
    e.dport = dport;
    e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.old_state = old;
    e.new_state = new;
    SockEvent::decode(&e)
}

fn addr(p: u16) -> std::net::SocketAddr {
    format!("127.0.0.1:{p}").parse().unwrap()
}

fn snap(cookie: u64, l: u16, r: u16, owner: Option<(u32, &[u8])>) -> Connection {
    Connection {
        proto: Proto::Tcp,
        ipv6: false,
        local: addr(l),
        remote: addr(r),
        state: Some(ESTABLISHED),
        id: SockId { netns: 0, cookie },
        inode: 9,
        uid: Some(0),
        offloaded: false,
        owner: owner.map(|(pid, comm)| Owner::new(pid, Comm::new(comm), OwnerSource::Proc)),
    }
}

fn cookies(t: &Table) -> Vec<u64> {
    let mut v: Vec<u64> = t.live().map(|c| c.id.cookie).collect();
    v.sort();
    v
}

#[test]
fn connection_lifecycle_follows_the_socket_and_closes_into_time_wait() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 0, 80, CLOSE, SYN_SENT, 10, 7));
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 11, 7));
    assert_eq!(t.len(), 1);
    let r = t.live().next().unwrap();
    assert_eq!((r.local, r.state, r.id), (addr(5000), Some(ESTABLISHED), SockId { netns: NS, cookie: 1 }));
    assert_eq!(r.owner.as_ref().unwrap().pid, 7);
    t.apply(&ev(1, 5000, 80, ESTABLISHED, FIN_WAIT1, 12, 7));
    t.apply(&ev(1, 5000, 80, FIN_WAIT1, FIN_WAIT2, 13, 7));
    let mut fin_ev = ev(1, 5000, 80, FIN_WAIT2, CLOSE, 14, 7);
    fin_ev.lifetime = Some(crate::model::Lifetime { duration_ns: Some(4), bytes_sent: 1, bytes_received: 1, error: 0 });
    t.apply(&fin_ev);
    let closed = t.take_closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].conn.state, Some(TIME_WAIT));
    assert_eq!(closed[0].duration_ns, Some(4));
    assert_eq!(closed[0].opened_ns, Some(10));
    assert_eq!(closed[0].conn.owner.as_ref().unwrap().pid, 7);
    let tw = t.live().next().unwrap();
    assert_eq!((tw.state, tw.owner.is_none(), tw.id.cookie), (Some(TIME_WAIT), true, 1));
    assert!(t.take_closed().is_empty());
}

/// The 4-tuple is no identity: a socket whose close was lost must not lend
/// its row (or owner) to a new socket at the same address.
#[test]
fn a_new_socket_at_a_reused_tuple_is_a_new_row() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7));
    t.apply(&ev(2, 5000, 80, SYN_SENT, ESTABLISHED, 30, 8));
    assert_eq!(cookies(&t), vec![1, 2]);
    // The snapshot lists only the new socket: the old row was stale.
    t.reconcile(vec![snap(2, 5000, 80, None)], 20);
    assert_eq!(cookies(&t), vec![2]);
    assert_eq!(t.live().next().unwrap().owner.as_ref().unwrap().pid, 8);
}

#[test]
fn reconcile_removes_stale_and_adds_missing() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7)); // its close will be "lost"
    t.apply(&ev(2, 5001, 80, SYN_SENT, ESTABLISHED, 30, 7)); // newer than the snapshot
    t.reconcile(vec![snap(3, 6000, 22, Some((3, b"sshd")))], 20);
    assert_eq!(cookies(&t), vec![2, 3]);
    let sshd = t.live().find(|r| r.id.cookie == 3).unwrap();
    assert_eq!(sshd.owner.as_ref().unwrap().source, OwnerSource::Proc);
    assert_eq!(sshd.id.netns, NS);
}

#[test]
fn snapshot_rows_without_a_cookie_are_not_taken() {
    let mut t = Table::new(NS, 100);
    t.reconcile(vec![snap(0, 6000, 22, None)], 20);
    assert!(t.is_empty());
}

#[test]
fn events_without_a_cookie_are_counted_not_applied() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(0, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7));
    assert!(t.is_empty());
    assert_eq!(t.lost_by_reason.get(NO_COOKIE), Some(&1));
}

#[test]
fn snapshot_cannot_resurrect_a_connection_closed_after_it_began() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7));
    t.apply(&ev(1, 5000, 80, ESTABLISHED, CLOSE, 25, 7));
    t.reconcile(vec![snap(1, 5000, 80, None)], 20);
    assert!(t.is_empty());
}

#[test]
fn cap_drops_closed_rows_oldest_first_and_counts() {
    let mut t = Table::new(NS, 3);
    for i in 0..10u16 {
        t.apply(&ev(100 + i as u64, 5000 + i, 80, SYN_SENT, ESTABLISHED, 10, 7));
        t.apply(&ev(100 + i as u64, 5000 + i, 80, ESTABLISHED, CLOSE, 11, 7));
    }
    assert_eq!(t.dropped, 7);
    let closed = t.take_closed();
    assert_eq!(closed.len(), 3);
    assert_eq!(closed[0].conn.local, addr(5007));
}

#[test]
fn cap_holds_for_live_rows_too() {
    let mut t = Table::new(NS, 4);
    for i in 0..10u16 {
        t.apply(&ev(100 + i as u64, 5000 + i, 80, SYN_SENT, ESTABLISHED, 10, 7));
    }
    assert_eq!(t.len(), 4);
    assert_eq!(t.dropped, 6);
    // TIME_WAIT rows make room for live ones, oldest first.
    let mut t = Table::new(NS, 3);
    for i in 0..3u16 {
        t.apply(&ev(200 + i as u64, 6000 + i, 80, FIN_WAIT2, CLOSE, 10, 7));
        t.take_closed();
    }
    t.apply(&ev(9, 7000, 80, SYN_SENT, ESTABLISHED, 11, 7));
    assert_eq!(t.len(), 3);
    assert!(t.live().any(|r| r.local == addr(7000)));
    assert!(!t.live().any(|r| r.local == addr(6000)));
}

#[test]
fn other_namespaces_are_ignored() {
    let mut t = Table::new(42, 100);
    let mut e = ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 10, 7);
    e.id.netns = 43;
    t.apply(&e);
    assert!(t.is_empty());
    e.id.netns = 42;
    t.apply(&e);
    assert_eq!(t.len(), 1);
}

/// An orphan closed in FIN_WAIT_2: the kernel swaps in a timewait socket in
/// substate FIN_WAIT_2 (sock_diag says FIN_WAIT_2, inode 0) and no event
/// reports its move to TIME_WAIT. Within one display the table and the
/// closed section agree on the state; the table has no owner (PID 0), the
/// closed row names the process that closed it.
#[test]
fn a_connection_in_the_table_and_in_closed_has_one_state() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 0, 80, CLOSE, SYN_SENT, 10, 7));
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 11, 7));
    t.apply(&ev(1, 5000, 80, ESTABLISHED, FIN_WAIT1, 12, 7));
    t.apply(&ev(1, 5000, 80, FIN_WAIT1, FIN_WAIT2, 13, 7));
    t.apply(&ev(1, 5000, 80, FIN_WAIT2, CLOSE, 14, 7));
    let mut tw = snap(1, 5000, 80, None);
    tw.state = Some(FIN_WAIT2);
    tw.inode = 0;
    t.reconcile(vec![tw], 20);
    let live: Vec<&Connection> = t.live().collect();
    assert_eq!((live.len(), live[0].state, live[0].owner.as_ref()), (1, Some(FIN_WAIT2), None));
    let closed = t.take_closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].conn.state, Some(FIN_WAIT2));
    assert_eq!(closed[0].conn.owner.as_ref().map(|o| o.pid), Some(7));
}

/// A socket its process closed (inode 0 in a snapshot, FIN_WAIT_1) loses
/// its owner in the table, events notwithstanding; its closed row still
/// names the closer.
#[test]
fn an_orphan_has_no_owner_in_the_table_and_its_closer_in_closed() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 11, 7));
    t.apply(&ev(1, 5000, 80, ESTABLISHED, FIN_WAIT1, 12, 7));
    let mut orphan = snap(1, 5000, 80, None);
    orphan.state = Some(FIN_WAIT1);
    orphan.inode = 0;
    t.reconcile(vec![orphan], 20);
    assert_eq!(t.live().next().unwrap().owner, None);
    t.apply(&ev(1, 5000, 80, FIN_WAIT1, FIN_WAIT2, 21, 9));
    assert_eq!(t.live().next().unwrap().owner, None, "an event's remembered owner does not re-adopt an orphan");
    t.apply(&ev(1, 5000, 80, FIN_WAIT2, CLOSE, 22, 9));
    let closed = t.take_closed();
    assert_eq!(closed[0].conn.owner.as_ref().map(|o| o.pid), Some(7));
    assert_eq!(closed[0].conn.state, Some(TIME_WAIT));
    assert_eq!(t.live().next().unwrap().owner, None);
}

fn owner_of(t: &Table, cookie: u64) -> Option<u32> {
    t.live().find(|c| c.id.cookie == cookie).and_then(|c| c.owner.as_ref().map(|o| o.pid))
}

#[test]
fn a_hand_off_names_the_new_holder_and_keeps_the_creator() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 0, 80, CLOSE, SYN_SENT, 10, 7));
    let mut e = ev(1, 5000, 80, ESTABLISHED, ESTABLISHED, 20, 8);
    e.change = Change::Owner { state: ESTABLISHED };
    if let Some(o) = e.owner.as_mut() {
        o.source = OwnerSource::Current;
        o.creator = Some(crate::model::Process { pid: 7, comm: Comm::new(b"cli"), pid_start: None });
    }
    t.apply(&e);
    let c = t.live().next().unwrap();
    let o = c.owner.as_ref().unwrap();
    assert_eq!((o.pid, o.creator.as_ref().map(|c| c.pid), c.state), (8, Some(7), Some(ESTABLISHED)));
}

#[test]
fn a_holder_found_in_proc_outlasts_the_kernels_stale_record() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 0, 80, CLOSE, SYN_SENT, 10, 7));
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 11, 7));
    // /proc says process 9 holds it now (7 closed its copy after a fork).
    let id = t.held().next().unwrap().0;
    t.set_holder(id, Some(Owner::new(9, Comm::new(b"child"), OwnerSource::Proc)));
    assert_eq!(owner_of(&t, 1), Some(9));
    // A softirq transition repeats the kernel's record (captured: 7): kept.
    t.apply(&ev(1, 5000, 80, ESTABLISHED, CLOSE_WAIT, 12, 7));
    assert_eq!(owner_of(&t, 1), Some(9));
    // A process acting on the socket (current) is believed again.
    let mut e = ev(1, 5000, 80, CLOSE_WAIT, LAST_ACK, 13, 9);
    e.owner.as_mut().unwrap().source = OwnerSource::Current;
    t.apply(&e);
    assert_eq!(owner_of(&t, 1), Some(9));
    let mut e = ev(1, 5000, 80, LAST_ACK, LAST_ACK, 14, 5);
    e.change = Change::Owner { state: LAST_ACK };
    e.owner.as_mut().unwrap().source = OwnerSource::Current;
    t.apply(&e);
    assert_eq!(owner_of(&t, 1), Some(5));
}

#[test]
fn a_socket_no_process_holds_keeps_no_owner_but_its_closed_row_names_the_last() {
    let mut t = Table::new(NS, 100);
    t.apply(&ev(1, 0, 80, CLOSE, SYN_SENT, 10, 7));
    t.apply(&ev(1, 5000, 80, SYN_SENT, ESTABLISHED, 11, 7));
    let id = t.held().next().unwrap().0;
    t.set_holder(id, None);
    assert_eq!(owner_of(&t, 1), None);
    assert_eq!(t.held().count(), 0);
    t.apply(&ev(1, 5000, 80, ESTABLISHED, CLOSE, 12, 7));
    let closed = t.take_closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].conn.owner.as_ref().map(|o| o.pid), Some(7));
}
