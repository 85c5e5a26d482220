//! Kernel events in the connection model's terms. The one place that
//! decodes the kernel's record: addresses, what counts as UDP, where the
//! owner came from. The table and every printer read `SockEvent`, never
//! `netstat_common::Event`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netstat_common::{AF_INET, Event, IPPROTO_UDP, flags, kind, tcp_state};

use super::{Comm, Owner, OwnerSource, Process, Proto, SockId, start_ticks};

/// What happened to the socket (the schema's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    TcpState { old: u32, new: u32 },
    Accept,
    /// The socket changed hands between transitions; `state` is its state.
    Owner { state: u32 },
    /// The socket sent (`sent`) or received an RST; `state` is its state.
    Reset { sent: bool, state: u32 },
    /// `implicit`: done by a first send or connect on an unbound socket.
    UdpBind { implicit: bool },
    UdpConnect,
    UdpClose,
    /// A kind this build does not know (newer kernel object).
    Unknown(u32),
}

impl Change {
    pub fn key(self) -> &'static str {
        match self {
            Change::TcpState { .. } => "tcp_state",
            Change::Accept => "tcp_accept",
            Change::Owner { .. } => "tcp_owner",
            Change::Reset { .. } => "tcp_reset",
            Change::UdpBind { .. } => "udp_bind",
            Change::UdpConnect => "udp_connect",
            Change::UdpClose => "udp_close",
            Change::Unknown(_) => "unknown",
        }
    }

    /// The kernel's UDP event kinds name UDP whatever `protocol` says.
    fn is_udp(self) -> bool {
        matches!(self, Change::UdpBind { .. } | Change::UdpConnect | Change::UdpClose)
    }
}

/// A TCP connection's totals on its last transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Since the kernel first saw the socket (None when it could not tell).
    pub duration_ns: Option<u64>,
    /// `tcp_sock.bytes_acked` (sequence space: SYN and FIN count one each).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The socket's error as it closed (`sk_err`: ETIMEDOUT, ECONNREFUSED,
    /// ECONNRESET), 0 for none.
    pub error: u32,
}

/// One kernel event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockEvent {
    /// CLOCK_MONOTONIC ns (the kernel's time of the event).
    pub ts_ns: u64,
    pub change: Change,
    pub proto: Proto,
    pub ipv6: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub id: SockId,
    /// The owner's uid, when there is an owner.
    pub uid: Option<u32>,
    pub owner: Option<Owner>,
    pub lifetime: Option<Lifetime>,
}

fn ip(ipv6: bool, a: &[u8; 16]) -> IpAddr {
    if ipv6 { IpAddr::V6(Ipv6Addr::from(*a)) } else { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) }
}

fn change_of(e: &Event) -> Change {
    match e.kind {
        kind::TCP_STATE => Change::TcpState { old: e.old_state, new: e.new_state },
        kind::TCP_ACCEPT => Change::Accept,
        kind::TCP_OWNER => Change::Owner { state: e.new_state },
        kind::TCP_RESET => Change::Reset { sent: e.flags & flags::RESET_SENT != 0, state: e.new_state },
        kind::UDP_BIND => Change::UdpBind { implicit: e.flags & flags::IMPLICIT_BIND != 0 },
        kind::UDP_CONNECT => Change::UdpConnect,
        kind::UDP_CLOSE => Change::UdpClose,
        k => Change::Unknown(k),
    }
}

fn owner_source(f: u32) -> Option<OwnerSource> {
    match f & flags::OWNER_MASK {
        flags::OWNER_CAPTURED => Some(OwnerSource::Captured),
        flags::OWNER_CURRENT => Some(OwnerSource::Current),
        flags::OWNER_LISTENER => Some(OwnerSource::Listener),
        _ => None,
    }
}

impl SockEvent {
    pub fn decode(e: &Event) -> SockEvent {
        let change = change_of(e);
        let ipv6 = e.family != AF_INET;
        let owner = owner_source(e.flags).map(|source| Owner {
            pid: e.tgid,
            tid: Some(e.pid),
            comm: Comm::new(&e.comm),
            pid_start: start_ticks(e.pid_start_ns),
            exe: None,
            source,
            creator: (e.creator_tgid != 0).then(|| Process {
                pid: e.creator_tgid,
                comm: Comm::new(&e.creator_comm),
                pid_start: start_ticks(e.creator_start_ns),
            }),
            parent: (e.parent_tgid != 0).then(|| Process { pid: e.parent_tgid, comm: Comm::new(&e.parent_comm), pid_start: None }),
            ns_pid: (e.ns_pid != 0).then_some(e.ns_pid),
            cgroup_id: (e.cgroup_id != 0).then_some(e.cgroup_id),
            cgroup: None,
            ancestors: None,
        });
        let lifetime = (e.flags & flags::HAS_LIFETIME != 0).then_some(Lifetime {
            duration_ns: (e.duration_ns != 0).then_some(e.duration_ns),
            bytes_sent: e.bytes_acked,
            bytes_received: e.bytes_received,
            error: e.sk_err,
        });
        SockEvent {
            ts_ns: e.ts_ns,
            change,
            proto: if e.protocol == IPPROTO_UDP || change.is_udp() { Proto::Udp } else { Proto::Tcp },
            ipv6,
            local: SocketAddr::new(ip(ipv6, &e.saddr), e.sport),
            remote: SocketAddr::new(ip(ipv6, &e.daddr), e.dport),
            id: SockId { netns: e.netns, cookie: e.cookie },
            uid: owner.as_ref().map(|_| e.uid),
            owner,
            lifetime,
        }
    }

    /// The TCP state after the event (None for UDP and accepts).
    pub fn new_state(&self) -> Option<u32> {
        match self.change {
            Change::TcpState { new, .. } => Some(new),
            _ => None,
        }
    }

    /// A transition into CLOSE from FIN_WAIT_2 or CLOSING: the kernel swaps
    /// in a TIME_WAIT socket (same cookie) that netstat lists.
    pub fn ends_in_time_wait(&self) -> bool {
        matches!(self.change, Change::TcpState { old: tcp_state::FIN_WAIT2 | tcp_state::CLOSING, new: tcp_state::CLOSE })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_addresses_owner_and_proto() {
        let mut e = Event::zeroed();
        e.kind = kind::UDP_BIND;
        e.flags = flags::OWNER_CURRENT | flags::IMPLICIT_BIND;
        e.family = AF_INET;
        e.protocol = 0;
        e.sport = 53;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.tgid = 10;
        e.pid = 11;
        e.uid = 1000;
        e.netns = 7;
        e.cookie = 99;
        e.comm[..3].copy_from_slice(b"dig");
        let s = SockEvent::decode(&e);
        assert_eq!(s.proto, Proto::Udp);
        assert_eq!(s.change, Change::UdpBind { implicit: true });
        assert_eq!(s.local, "127.0.0.1:53".parse().unwrap());
        assert_eq!(s.id, SockId { netns: 7, cookie: 99 });
        let o = s.owner.unwrap();
        assert_eq!((o.pid, o.tid, o.comm.as_bytes(), o.source), (10, Some(11), &b"dig"[..], OwnerSource::Current));
        assert_eq!(s.uid, Some(1000));
        assert!(o.creator.is_none() && o.pid_start.is_none());
    }

    #[test]
    fn decodes_holder_start_and_creator() {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.flags = flags::OWNER_CAPTURED;
        e.tgid = 20;
        e.pid_start_ns = 123 * (1_000_000_000 / crate::model::clock_ticks()) + 5;
        e.creator_tgid = 7;
        e.creator_start_ns = 9 * (1_000_000_000 / crate::model::clock_ticks());
        e.creator_comm[..8].copy_from_slice(b"postgres");
        let o = SockEvent::decode(&e).owner.unwrap();
        assert_eq!(o.pid_start, Some(123));
        let c = o.creator.unwrap();
        assert_eq!((c.pid, c.comm.as_bytes(), c.pid_start), (7, &b"postgres"[..], Some(9)));
        assert!(o.parent.is_none() && o.ns_pid.is_none() && o.cgroup_id.is_none());
    }

    #[test]
    fn decodes_parent_namespace_pid_and_cgroup() {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.flags = flags::OWNER_CURRENT;
        e.tgid = 300;
        e.parent_tgid = 1;
        e.parent_comm[..7].copy_from_slice(b"systemd");
        e.ns_pid = 7;
        e.cgroup_id = 4242;
        let o = SockEvent::decode(&e).owner.unwrap();
        let p = o.parent.unwrap();
        assert_eq!((p.pid, p.comm.as_bytes()), (1, &b"systemd"[..]));
        assert_eq!((o.ns_pid, o.cgroup_id), (Some(7), Some(4242)));
    }

    #[test]
    fn decodes_a_hand_off() {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_OWNER;
        e.flags = flags::OWNER_CURRENT;
        e.new_state = tcp_state::ESTABLISHED;
        let s = SockEvent::decode(&e);
        assert_eq!(s.change, Change::Owner { state: tcp_state::ESTABLISHED });
        assert_eq!(s.change.key(), "tcp_owner");
    }

    #[test]
    fn an_unowned_event_has_no_uid() {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.family = netstat_common::AF_INET6;
        e.uid = 5;
        let s = SockEvent::decode(&e);
        assert!(s.owner.is_none() && s.uid.is_none());
        assert!(s.ipv6 && s.proto == Proto::Tcp);
    }
}
