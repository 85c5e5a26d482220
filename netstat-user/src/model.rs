//! The connection model every source produces and every printer consumes:
//! snapshot readers (`netlink`, `proc`), the owner scan and, later, the live
//! table. Plain data; no I/O here.
use std::{net::SocketAddr, path::PathBuf};

use netstat_common::tcp_state;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Proto {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// The process behind a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcOwner {
    pub pid: u32,
    /// Raw comm bytes, as the kernel keeps them (escape before printing).
    pub comm: Vec<u8>,
    /// /proc/PID/exe, when it could be read (only looked up for -b).
    pub exe: Option<PathBuf>,
}

/// One socket as netstat lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub proto: Proto,
    /// The socket's own address family; an IPv6 socket with IPv4-mapped
    /// addresses is still IPv6, as in /proc/net/tcp6.
    pub ipv6: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state number (`netstat_common::tcp_state`); None for UDP.
    pub state: Option<u32>,
    /// Socket inode (0 for TIME_WAIT and request sockets).
    pub inode: u64,
    pub uid: u32,
    /// Kernel TLS with device offload (TLS_CONF_HW or HW_RECORD) in either direction.
    pub offloaded: bool,
    pub owner: Option<ProcOwner>,
}

impl Connection {
    pub fn is_listener(&self) -> bool {
        self.state == Some(tcp_state::LISTEN)
    }

    /// UDP with no peer: what netstat -a calls a UDP endpoint.
    pub fn is_unconnected_udp(&self) -> bool {
        self.proto == Proto::Udp && self.remote.ip().is_unspecified() && self.remote.port() == 0
    }

    /// Order netstat lists in: TCP then UDP, IPv4 then IPv6, by local then
    /// foreign address.
    pub fn sort_key(&self) -> impl Ord + use<> {
        (self.proto, self.ipv6, self.local.ip(), self.local.port(), self.remote.ip(), self.remote.port(), self.inode)
    }
}

/// netstat's names for the kernel's TCP states (shared with the tracer).
pub fn tcp_state_name(s: u32) -> &'static str {
    use tcp_state::*;
    match s {
        ESTABLISHED => "ESTABLISHED",
        SYN_SENT => "SYN_SENT",
        SYN_RECV | NEW_SYN_RECV => "SYN_RECEIVED",
        FIN_WAIT1 => "FIN_WAIT_1",
        FIN_WAIT2 => "FIN_WAIT_2",
        TIME_WAIT => "TIME_WAIT",
        CLOSE => "CLOSED",
        CLOSE_WAIT => "CLOSE_WAIT",
        LAST_ACK => "LAST_ACK",
        LISTEN => "LISTENING",
        CLOSING => "CLOSING",
        _ => "UNKNOWN",
    }
}

impl From<Connection> for crate::table::SnapshotRow {
    /// Seed or reconcile the live table from a snapshot (consumed, so a
    /// large snapshot is never held twice).
    fn from(c: Connection) -> Self {
        crate::table::SnapshotRow {
            key: crate::table::ConnKey { proto: c.proto, local: c.local, remote: c.remote },
            state: c.state,
            inode: c.inode,
            uid: c.uid,
            offloaded: c.offloaded,
            owner: c.owner.map(|o| (o.pid, o.comm)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_state_has_a_netstat_name() {
        let names: Vec<_> = (1..=12).map(tcp_state_name).collect();
        assert_eq!(
            names,
            [
                "ESTABLISHED",
                "SYN_SENT",
                "SYN_RECEIVED",
                "FIN_WAIT_1",
                "FIN_WAIT_2",
                "TIME_WAIT",
                "CLOSED",
                "CLOSE_WAIT",
                "LAST_ACK",
                "LISTENING",
                "CLOSING",
                "SYN_RECEIVED"
            ]
        );
        assert_eq!(tcp_state_name(0), "UNKNOWN");
        assert_eq!(tcp_state_name(99), "UNKNOWN");
    }
}
