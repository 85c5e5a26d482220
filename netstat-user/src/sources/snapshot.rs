//! One picture of the namespace's TCP and UDP sockets: netlink sock_diag on
//! the live system, /proc/net/{tcp,tcp6,udp,udp6} when sock_diag is refused
//! or when the proc root is a fixture tree (netlink cannot read a fixture).
//! No owners here: that is `owners`' (or the live table's) job.
use std::path::Path;

use crate::{
    cli::config::Config,
    model::{Connection, Proto},
    sources::netlink::{self, DumpSpec},
    sources::netns,
    sources::proc::{ProcError, sockets},
};

/// Which tables a display needs.
pub fn specs_for(cfg: &Config) -> Vec<DumpSpec> {
    let mut v = Vec::new();
    for (proto, on) in [(Proto::Tcp, cfg.proto.tcp), (Proto::Udp, cfg.proto.udp)] {
        for (ipv6, fam) in [(false, cfg.family.v4()), (true, cfg.family.v6())] {
            if on && fam {
                v.push(DumpSpec { proto, ipv6, ulp: cfg.offload, states: crate::sources::netlink::ALL_STATES });
            }
        }
    }
    v
}

/// The sockets `cfg` selects by protocol and family (not yet by -a).
pub fn snapshot(cfg: &Config) -> Result<Vec<Connection>, ProcError> {
    snapshot_tables(&cfg.proc_root, &specs_for(cfg))
}

/// Like `snapshot`, from sock_diag only: the live table needs socket
/// cookies to match kernel events with, and /proc/net has none.
pub fn with_cookies(cfg: &Config) -> Result<Vec<Connection>, netlink::DiagError> {
    netlink::dump(&specs_for(cfg))
}

/// --all-namespaces: every namespace's sockets, each row's `netns` set,
/// and the namespaces found (for their labels). Without the privilege to
/// enter them, an `EnvError` (exit status 2).
pub fn all_namespaces(cfg: &Config) -> anyhow::Result<(Vec<Connection>, Vec<netns::Namespace>)> {
    if !netns::may_enter(&cfg.proc_root) {
        return Err(crate::EnvError("--all-namespaces needs CAP_SYS_ADMIN and CAP_SYS_PTRACE (to find and enter the other network namespaces)".into()).into());
    }
    netns::dump_all(&cfg.proc_root, &specs_for(cfg)).map_err(|e| match e {
        netlink::DiagError::Namespace(m) => crate::EnvError(m).into(),
        e => e.into(),
    })
}

/// This namespace's TCP listeners with the processes that hold them (one
/// /proc walk), for the tracer to seed its listener map with: their
/// children then carry an owner from their first transition. Empty when
/// sock_diag or /proc cannot tell (the tracer then learns listeners as they
/// start).
pub fn listeners_with_owners(proc_root: &Path) -> Vec<Connection> {
    let listen = 1 << netstat_common::tcp_state::LISTEN;
    let specs = [false, true].map(|ipv6| DumpSpec { proto: Proto::Tcp, ipv6, ulp: false, states: listen });
    let Ok(mut conns) = netlink::dump(&specs) else { return Vec::new() };
    conns.retain(|c| c.is_listener());
    // With each holder's parent and cgroup: the children inherit them.
    let mut cgroups = crate::sources::cgroup::Cgroups::new(proc_root, Path::new("/"));
    crate::sources::owners::ProcFdScan { proc_root: proc_root.to_path_buf() }.fill_with(&mut conns, false, Some(&mut cgroups));
    conns
}

pub fn snapshot_tables(proc_root: &Path, specs: &[DumpSpec]) -> Result<Vec<Connection>, ProcError> {
    if proc_root == Path::new("/proc") {
        match netlink::dump(specs) {
            Ok(c) => return Ok(c),
            Err(e) => log::debug!("sock_diag unavailable, reading /proc/net: {e}"),
        }
    }
    from_proc(proc_root, specs)
}

/// The /proc/net fallback (no offload information there: all InHost).
pub fn from_proc(proc_root: &Path, specs: &[DumpSpec]) -> Result<Vec<Connection>, ProcError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for s in specs {
        let name = match (s.proto, s.ipv6) {
            (Proto::Tcp, false) => "tcp",
            (Proto::Tcp, true) => "tcp6",
            (Proto::Udp, false) => "udp",
            (Proto::Udp, true) => "udp6",
        };
        match sockets::read_table(proc_root, name, s.proto, s.ipv6) {
            Ok(rows) => out.extend(rows),
            Err(e) => errors.push(e),
        }
    }
    // An unreadable table costs its rows, not the display: say so once.
    if !errors.is_empty() && errors.len() == specs.len() {
        return Err(errors.remove(0));
    }
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !errors.is_empty() && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let what: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        eprintln!("netstat: warning: {}; showing the rest", crate::escape::escape(&what.join("; ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables the tests' sockets live in: TCP over IPv4, UDP over IPv6.
    fn tcp4_udp6() -> Vec<DumpSpec> {
        [(Proto::Tcp, false), (Proto::Udp, true)].into_iter().map(|(proto, ipv6)| DumpSpec { proto, ipv6, ulp: false, states: crate::sources::netlink::ALL_STATES }).collect()
    }

    /// Both sources describe the same namespace: a listener, a connection
    /// and a UDP socket of ours appear in each with the same inode.
    #[test]
    fn netlink_and_proc_agree_on_our_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let u = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let specs = tcp4_udp6();
        let nl = netlink::dump(&specs).unwrap();
        let pr = from_proc(Path::new("/proc"), &specs).unwrap();
        for addr in [l.local_addr().unwrap(), c.local_addr().unwrap(), u.local_addr().unwrap()] {
            let a = nl.iter().find(|x| x.local == addr).unwrap_or_else(|| panic!("{addr} not in netlink dump"));
            let b = pr.iter().find(|x| x.local == addr).unwrap_or_else(|| panic!("{addr} not in /proc/net"));
            assert_eq!((a.proto, a.ipv6, a.remote, a.state, a.inode, a.uid), (b.proto, b.ipv6, b.remote, b.state, b.inode, b.uid));
        }
    }

    fn so_cookie(fd: std::os::fd::RawFd) -> u64 {
        let mut v: u64 = 0;
        let mut len = size_of::<u64>() as libc::socklen_t;
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_COOKIE, (&mut v as *mut u64).cast(), &mut len) };
        assert_eq!(r, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
        v
    }

    /// sock_diag's cookie is the socket's own (the kernel's SO_COOKIE says
    /// so), distinct per socket: the identity the live table keys by.
    #[test]
    fn netlink_cookies_are_the_sockets_own() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let u = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let specs = tcp4_udp6();
        let nl = netlink::dump(&specs).unwrap();
        let find = |local: std::net::SocketAddr, remote: Option<std::net::SocketAddr>| {
            nl.iter()
                .find(|x| x.local == local && remote.is_none_or(|r| x.remote == r))
                .unwrap_or_else(|| panic!("{local} not in the dump"))
                .id
                .cookie
        };
        let want = [
            (find(l.local_addr().unwrap(), Some("0.0.0.0:0".parse().unwrap())), so_cookie(l.as_raw_fd())),
            (find(c.local_addr().unwrap(), None), so_cookie(c.as_raw_fd())),
            (find(s.local_addr().unwrap(), Some(s.peer_addr().unwrap())), so_cookie(s.as_raw_fd())),
            (find(u.local_addr().unwrap(), None), so_cookie(u.as_raw_fd())),
        ];
        for (got, expect) in want {
            assert_ne!(expect, 0);
            assert_eq!(got, expect);
        }
        let mut distinct: Vec<u64> = want.iter().map(|w| w.1).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 4);
    }
}
