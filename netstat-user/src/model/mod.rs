//! The one connection model: every source fills it (sock_diag snapshot, the
//! /proc fallback, the owner scan, kernel events through `event`, the live
//! table) and every printer reads it (text layouts and the JSON encoder).
//! Plain data and the rules that name things; no I/O, no formats.
pub mod event;
pub mod history;

use std::{net::SocketAddr, path::Path, sync::Arc};

use netstat_common::{COMM_LEN, tcp_state};

pub use event::{Change, Lifetime, SockEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// netstat's column text.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }

    /// The schema's `proto` value.
    pub fn key(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The schema's `family` value for a socket of that family.
pub fn family_key(ipv6: bool) -> &'static str {
    if ipv6 { "ipv6" } else { "ipv4" }
}

/// A socket's identity for its whole life: its network namespace (inode of
/// /proc/PID/ns/net) and the kernel's socket cookie (sock_diag's
/// `idiag_cookie`, `bpf_get_socket_cookie`, `SO_COOKIE`). 0 = not known
/// (the /proc/net fallback has no cookie; events from a kernel path that
/// could not read it). The 4-tuple is not an identity: it repeats across
/// namespaces and when a port is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SockId {
    pub netns: u32,
    pub cookie: u64,
}

impl SockId {
    /// Whether a display limited to namespace `netns` (0: every one) shows
    /// this socket. One whose namespace is not known is shown.
    pub fn within(&self, netns: u32) -> bool {
        netns == 0 || self.netns == 0 || self.netns == netns
    }
}

/// A map keyed by socket identity. Cookies are the kernel's own unique
/// counter, not input anyone chooses, so a multiplicative hash (FxHash's)
/// serves where SipHash would cost more than the rest of an event's work.
pub type IdMap<V> = std::collections::HashMap<SockId, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// Where an owner came from (the schema's `owner_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerSource {
    /// The task on the CPU, acting on the socket in its own syscall.
    Current,
    /// Remembered in the kernel from the owner's own connect/listen/accept.
    Captured,
    /// An accepted socket before accept() returned: the listener's owner.
    Listener,
    /// Found in /proc/*/fd (snapshot, seed or reconcile).
    Proc,
}

impl OwnerSource {
    pub fn key(self) -> &'static str {
        match self {
            OwnerSource::Current => "current",
            OwnerSource::Captured => "captured",
            OwnerSource::Listener => "listener",
            OwnerSource::Proc => "proc",
        }
    }
}

/// `owner_source` of a row or event that has no owner.
pub const NO_OWNER_SOURCE: &str = "none";

/// A process name as the kernel keeps it: at most 16 raw bytes, not
/// necessarily UTF-8 (escape before printing). Fixed size, so an owner
/// costs no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; COMM_LEN],
    len: u8,
}

impl Comm {
    /// From raw bytes, cut at the first NUL and at 16 bytes.
    pub fn new(b: &[u8]) -> Comm {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(COMM_LEN);
        let mut bytes = [0; COMM_LEN];
        bytes[..end].copy_from_slice(&b[..end]);
        Comm { bytes, len: end as u8 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::escape::escape_bytes(self.as_bytes()))
    }
}

/// A process as /proc names it: (pid, pid_start) is one process, even
/// after its PID is reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: Comm,
    pub pid_start: Option<u64>,
}

/// The process that holds a socket (or acted on it, for an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Thread-group id: the process.
    pub pid: u32,
    /// The acting thread, when an event names one.
    pub tid: Option<u32>,
    pub comm: Comm,
    /// The process's start time in clock ticks after boot (/proc/PID/stat
    /// field 22), so a reused PID is never taken for it.
    pub pid_start: Option<u64>,
    /// /proc/PID/exe, read while the process lived.
    pub exe: Option<Arc<Path>>,
    pub source: OwnerSource,
    /// The process that created or accepted the socket, when known (the
    /// kernel saw it happen).
    pub creator: Option<Process>,
    /// The holder's parent (pid and comm; its start is not known).
    pub parent: Option<Process>,
    /// The holder's PID in its own PID namespace (what `ps` shows there).
    pub ns_pid: Option<u32>,
    /// The holder's cgroup v2 id (the inode of its cgroup directory).
    pub cgroup_id: Option<u64>,
    /// What `cgroup_id` names, once resolved (`sources::cgroup`).
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// -b -v: the parent, grandparent, ... up to the first outside the
    /// holder's unit or container (read from /proc while they live).
    pub ancestors: Option<Arc<[Process]>>,
}

/// A cgroup v2 and what it says the process is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupInfo {
    pub id: u64,
    /// Relative to the cgroup v2 mount (`/system.slice/nginx.service`), as
    /// /proc/PID/cgroup shows it; raw bytes (untrusted). None when the
    /// cgroup was gone before it was resolved.
    pub path: Option<Box<[u8]>>,
    /// The innermost systemd unit on the path (`nginx.service`).
    pub unit: Option<Box<str>>,
    pub container: Option<Container>,
    /// Looked for after the event that named it, and not found: removed
    /// before it could be resolved (false for one not looked for yet).
    pub gone: bool,
    /// The JSON encoder's rendering of the fields above (`render::json`),
    /// made once per cgroup: every event of a process copies it.
    pub encoded: std::sync::OnceLock<Box<[u8]>>,
}

/// A container, as its cgroup path and its runtime's files name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, or `cri` (a kubepods
    /// container whose runtime the path does not say).
    pub runtime: &'static str,
    /// The full id (64 hex characters).
    pub id: Box<str>,
    /// Its name, where the runtime's own files on the host give it.
    pub name: Option<Box<[u8]>>,
    /// The Kubernetes pod's uid, for a kubepods path.
    pub pod: Option<Box<str>>,
}

impl Container {
    /// `RUNTIME:ID12`, as -b and the Namespace column show it.
    pub fn short(&self) -> String {
        format!("{}:{}", self.runtime, &self.id[..self.id.len().min(12)])
    }
}

impl Owner {
    pub fn new(pid: u32, comm: Comm, source: OwnerSource) -> Owner {
        Owner {
            pid,
            tid: None,
            comm,
            pid_start: None,
            exe: None,
            source,
            creator: None,
            parent: None,
            ns_pid: None,
            cgroup_id: None,
            cgroup: None,
            ancestors: None,
        }
    }

    /// The same process as `other` (start times compared where both know theirs).
    pub fn same_process(&self, pid: u32, pid_start: Option<u64>) -> bool {
        self.pid == pid && (self.pid_start.is_none() || pid_start.is_none() || self.pid_start == pid_start)
    }
}

/// Clock ticks per second of /proc/PID/stat's times (USER_HZ).
pub fn clock_ticks() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    })
}

/// A kernel start time (ns after boot, `start_boottime`) as /proc/PID/stat
/// field 22 counts it (clock ticks, rounded down as the kernel does).
pub fn start_ticks(ns: u64) -> Option<u64> {
    (ns != 0).then(|| ns / (1_000_000_000 / clock_ticks()))
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
    pub id: SockId,
    /// Socket inode (0 for TIME_WAIT and request sockets).
    pub inode: u64,
    pub uid: Option<u32>,
    /// Kernel TLS with device offload (TLS_CONF_HW or HW_RECORD) in either direction.
    pub offloaded: bool,
    pub owner: Option<Owner>,
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
    ///
    /// Plain integers (IPv4 before IPv6, each address in its own order), so
    /// that sorting a large table compares words, not enums.
    pub fn sort_key(&self) -> (u8, (u8, u128, u16), (u8, u128, u16), u64) {
        (self.proto as u8 * 2 + self.ipv6 as u8, addr_key(self.local), addr_key(self.remote), self.inode)
    }
}

/// An address in `IpAddr`'s order (IPv4 first), then its port.
fn addr_key(a: SocketAddr) -> (u8, u128, u16) {
    match a.ip() {
        std::net::IpAddr::V4(ip) => (0, ip.to_bits() as u128, a.port()),
        std::net::IpAddr::V6(ip) => (1, ip.to_bits(), a.port()),
    }
}

/// A connection that opened and/or closed since the last display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedConnection {
    /// As it was at its end: `state` is the final state, `owner` the process
    /// that held it.
    pub conn: Connection,
    /// CLOCK_MONOTONIC ns when it opened, when known.
    pub opened_ns: Option<u64>,
    pub closed_ns: u64,
    /// How long it lived, when the kernel could tell.
    pub duration_ns: Option<u64>,
}

/// The errno names a socket's close can carry (`Lifetime::error`).
pub fn errno_name(e: u32) -> &'static str {
    match e as i32 {
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EPIPE => "EPIPE",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        _ => "error",
    }
}

/// netstat's names for the kernel's TCP states.
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

    #[test]
    fn sort_key_orders_as_protocol_family_and_addresses_do() {
        let conn = |proto, ipv6, local: &str, remote: &str, inode| Connection {
            proto,
            ipv6,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state: None,
            id: SockId { netns: 0, cookie: inode },
            inode,
            uid: None,
            offloaded: false,
            owner: None,
        };
        let conns = [
            conn(Proto::Udp, false, "10.0.0.1:53", "0.0.0.0:0", 1),
            conn(Proto::Tcp, true, "[::1]:22", "[::1]:40000", 2),
            conn(Proto::Tcp, true, "[::ffff:127.0.0.1]:22", "[::ffff:127.0.0.1]:9", 3),
            conn(Proto::Tcp, false, "127.0.0.1:22", "127.0.0.1:40000", 4),
            conn(Proto::Tcp, false, "127.0.0.1:22", "127.0.0.1:39999", 5),
            conn(Proto::Tcp, false, "127.0.0.1:22", "127.0.0.1:39999", 0),
            conn(Proto::Tcp, false, "9.255.255.255:80", "0.0.0.0:0", 6),
            conn(Proto::Tcp, false, "127.0.0.1:21", "[::1]:1", 7),
            conn(Proto::Udp, true, "[fe80::1]:5353", "[::]:0", 8),
        ];
        let mut by_key: Vec<&Connection> = conns.iter().collect();
        by_key.sort_by_key(|c| c.sort_key());
        // The order in words: protocol, family, then each address and port.
        let mut by_fields: Vec<&Connection> = conns.iter().collect();
        by_fields.sort_by_key(|c| (c.proto, c.ipv6, c.local.ip(), c.local.port(), c.remote.ip(), c.remote.port(), c.inode));
        let inodes = |v: &[&Connection]| v.iter().map(|c| c.inode).collect::<Vec<_>>();
        assert_eq!(inodes(&by_key), inodes(&by_fields));
        assert_eq!(inodes(&by_key), [6, 7, 0, 5, 4, 2, 3, 1, 8]);
    }

    #[test]
    fn comm_is_cut_at_nul_and_sixteen_bytes() {
        assert_eq!(Comm::new(b"curl\0junk").as_bytes(), b"curl");
        assert_eq!(Comm::new(b"a-very-long-process-name").as_bytes(), b"a-very-long-proc");
        assert!(Comm::new(b"").is_empty());
    }
}
