//! Socket snapshot through netlink sock_diag (what `ss` uses): one dump per
//! protocol and family, carrying inode, uid and state, and with -t the TCP
//! ULP attribute that says whether kernel TLS is offloaded to the device.
//! Raw netlink with libc; reads the caller's network namespace only.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::model::{Connection, Proto, SockId};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCPDIAG_GETSOCK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_INFO: u8 = 2;
const INET_DIAG_ULP_INFO: u16 = 19;
const INET_ULP_INFO_NAME: u16 = 1;
const INET_ULP_INFO_TLS: u16 = 2;
const TLS_INFO_TXCONF: u16 = 3;
const TLS_INFO_RXCONF: u16 = 4;
const TLS_CONF_HW: u16 = 3;
const TLS_CONF_HW_RECORD: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NLMSG_HDR: usize = 16;
const REQ_LEN: usize = 56;
const REQ_V1_LEN: usize = 60;
const DIAG_MSG_LEN: usize = 72;

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("netlink sock_diag socket: {0}")]
    Socket(io::Error),
    #[error("netlink sock_diag {what}: {source}")]
    Io { what: &'static str, source: io::Error },
    #[error("netlink sock_diag dump refused: {0}")]
    Kernel(io::Error),
    #[error("netlink sock_diag: malformed reply ({0})")]
    Malformed(&'static str),
    /// --all-namespaces: a namespace could not be entered.
    #[error("{0} (--all-namespaces needs CAP_SYS_ADMIN and CAP_SYS_PTRACE)")]
    Namespace(String),
}

/// One dump request.
#[derive(Debug, Clone, Copy)]
pub struct DumpSpec {
    pub proto: Proto,
    pub ipv6: bool,
    /// Ask for TCP info, which brings the ULP (kernel TLS) attribute.
    pub ulp: bool,
    /// TCP states wanted, as a bit mask (1 << state); `ALL_STATES` for all.
    pub states: u32,
}

pub const ALL_STATES: u32 = u32::MAX;

struct DiagSocket {
    fd: OwnedFd,
    seq: u32,
}

impl DiagSocket {
    fn open() -> Result<DiagSocket, DiagError> {
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(DiagError::Socket(io::Error::last_os_error()));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A big receive buffer lets the kernel fill each read with more sockets.
        let size: libc::c_int = 1 << 20;
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(DiagSocket { fd, seq: 0 })
    }

    /// SOCK_DIAG_BY_FAMILY with inet_diag_req_v2 for one family, or, with
    /// `both_families` (TCP only), the older TCPDIAG_GETSOCK request with
    /// family AF_UNSPEC: the kernel then walks its TCP hash once for IPv4 and
    /// IPv6 instead of twice, which halves the cost on a busy host (the walk
    /// covers every namespace's sockets).
    fn send_request(&mut self, spec: DumpSpec, both_families: bool) -> Result<(u32, u16), DiagError> {
        self.seq += 1;
        let ext = if spec.ulp && spec.proto == Proto::Tcp { 1 << (INET_DIAG_INFO - 1) } else { 0 };
        let (ty, body) = if both_families {
            // struct inet_diag_req: family, src_len, dst_len, ext, id, states, dbug.
            let mut r = vec![0u8; REQ_V1_LEN];
            r[0] = libc::AF_UNSPEC as u8;
            r[3] = ext;
            r[52..56].copy_from_slice(&spec.states.to_ne_bytes());
            (TCPDIAG_GETSOCK, r)
        } else {
            // struct inet_diag_req_v2: family, protocol, ext, pad, states, id.
            let mut r = vec![0u8; REQ_LEN];
            r[0] = if spec.ipv6 { libc::AF_INET6 as u8 } else { libc::AF_INET as u8 };
            r[1] = match spec.proto {
                Proto::Tcp => libc::IPPROTO_TCP as u8,
                Proto::Udp => libc::IPPROTO_UDP as u8,
            };
            r[2] = ext;
            r[4..8].copy_from_slice(&spec.states.to_ne_bytes());
            (SOCK_DIAG_BY_FAMILY, r)
        };
        let mut buf = vec![0u8; NLMSG_HDR];
        buf[0..4].copy_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        buf.extend_from_slice(&body);
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(DiagError::Io { what: "send", source: io::Error::last_os_error() });
        }
        Ok((self.seq, ty))
    }

    fn dump(&mut self, spec: DumpSpec, both_families: bool, out: &mut Vec<Connection>) -> Result<(), DiagError> {
        let (seq, reply_ty) = self.send_request(spec, both_families)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(DiagError::Io { what: "receive", source: e });
            }
            if n == 0 {
                return Err(DiagError::Malformed("reply ended before NLMSG_DONE"));
            }
            let mut msgs = &buf[..n as usize];
            while msgs.len() >= NLMSG_HDR {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(msgs[4..6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(msgs[8..12].try_into().unwrap());
                if len < NLMSG_HDR || len > msgs.len() {
                    return Err(DiagError::Malformed("message length"));
                }
                let body = &msgs[NLMSG_HDR..len];
                msgs = &msgs[align4(len).min(msgs.len())..];
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body.get(0..4).map(|b| i32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0);
                        if code == 0 {
                            continue;
                        }
                        return Err(DiagError::Kernel(io::Error::from_raw_os_error(-code)));
                    }
                    t if t == reply_ty => {
                        if let Some(c) = parse_diag_msg(body, spec) {
                            out.push(c);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One inet_diag_msg (and its attributes) as a connection; None when short.
pub fn parse_diag_msg(b: &[u8], spec: DumpSpec) -> Option<Connection> {
    if b.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = b[0];
    let state = b[1] as u32;
    let sport = u16::from_be_bytes([b[4], b[5]]);
    let dport = u16::from_be_bytes([b[6], b[7]]);
    let (src, dst) = if family == libc::AF_INET6 as u8 {
        let s: [u8; 16] = b[8..24].try_into().unwrap();
        let d: [u8; 16] = b[24..40].try_into().unwrap();
        (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
    } else {
        let s: [u8; 4] = b[8..12].try_into().unwrap();
        let d: [u8; 4] = b[24..28].try_into().unwrap();
        (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
    };
    // idiag_cookie: two u32 halves, low first (sock_diag_save_cookie).
    let lo = u32::from_ne_bytes(b[44..48].try_into().unwrap()) as u64;
    let hi = u32::from_ne_bytes(b[48..52].try_into().unwrap()) as u64;
    let uid = u32::from_ne_bytes(b[64..68].try_into().unwrap());
    let inode = u32::from_ne_bytes(b[68..72].try_into().unwrap());
    let offloaded = spec.ulp && attrs(&b[DIAG_MSG_LEN..]).any(|(ty, v)| ty == INET_DIAG_ULP_INFO && tls_offloaded(v));
    Some(Connection {
        proto: spec.proto,
        ipv6: family == libc::AF_INET6 as u8,
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        state: (spec.proto == Proto::Tcp).then_some(state),
        // The namespace is the reader's; the caller knows which it is.
        id: SockId { netns: 0, cookie: hi << 32 | lo },
        inode: inode as u64,
        uid: Some(uid),
        offloaded,
        owner: None,
    })
}

/// Netlink attributes (type without the nested/byte-order bits, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let v = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((ty, v))
    })
}

/// INET_DIAG_ULP_INFO { NAME "tls", TLS { TXCONF, RXCONF } }: offloaded when
/// either direction runs on the device.
fn tls_offloaded(ulp: &[u8]) -> bool {
    let is_tls = attrs(ulp).any(|(t, v)| t == INET_ULP_INFO_NAME && v.split(|&c| c == 0).next() == Some(b"tls"));
    is_tls
        && attrs(ulp).filter(|(t, _)| *t == INET_ULP_INFO_TLS).any(|(_, tls)| {
            attrs(tls).any(|(t, v)| {
                (t == TLS_INFO_TXCONF || t == TLS_INFO_RXCONF)
                    && v.len() >= 2
                    && matches!(u16::from_ne_bytes([v[0], v[1]]), TLS_CONF_HW | TLS_CONF_HW_RECORD)
            })
        })
}

/// Dump every requested table, in order, over one socket.
pub fn dump(specs: &[DumpSpec]) -> Result<Vec<Connection>, DiagError> {
    let mut s = DiagSocket::open()?;
    let mut out = Vec::new();
    let tcp = |ipv6| specs.iter().find(|x| x.proto == Proto::Tcp && x.ipv6 == ipv6);
    let mut done_tcp = false;
    if let (Some(a), Some(b)) = (tcp(false), tcp(true))
        && a.ulp == b.ulp
    {
        // One walk for both families; if the kernel no longer takes the old
        // request, ask per family below.
        let mark = out.len();
        match s.dump(*a, true, &mut out) {
            Ok(()) => done_tcp = true,
            Err(DiagError::Kernel(e)) => {
                log::debug!("one-walk TCP dump refused ({e}), dumping per family");
                out.truncate(mark);
            }
            Err(e) => return Err(e),
        }
    }
    for spec in specs {
        if !(done_tcp && spec.proto == Proto::Tcp) {
            s.dump(*spec, false, &mut out)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(v);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn tls_hw_offload_is_recognised() {
        let tls = |tx: u16| {
            let mut inner = attr(TLS_INFO_TXCONF, &tx.to_ne_bytes());
            inner.extend(attr(TLS_INFO_RXCONF, &2u16.to_ne_bytes()));
            let mut ulp = attr(INET_ULP_INFO_NAME, b"tls\0");
            ulp.extend(attr(INET_ULP_INFO_TLS | 0x8000, &inner));
            ulp
        };
        assert!(tls_offloaded(&tls(TLS_CONF_HW)));
        assert!(tls_offloaded(&tls(TLS_CONF_HW_RECORD)));
        assert!(!tls_offloaded(&tls(2)));
        assert!(!tls_offloaded(&attr(INET_ULP_INFO_NAME, b"mptcp\0")));
        assert!(!tls_offloaded(&[1, 0]));
    }

    #[test]
    fn one_walk_dump_equals_per_family_dumps() {
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let both = [false, true].map(|ipv6| DumpSpec { proto: Proto::Tcp, ipv6, ulp: false, states: crate::sources::netlink::ALL_STATES });
        let mut s = DiagSocket::open().unwrap();
        let mut one = Vec::new();
        s.dump(both[0], true, &mut one).unwrap();
        for l in [&l4, &l6] {
            let a = l.local_addr().unwrap();
            let c = one.iter().find(|c| c.local == a).expect("listener in the one-walk dump");
            assert_eq!(c.ipv6, a.is_ipv6());
        }
        let mut split = Vec::new();
        s.dump(both[0], false, &mut split).unwrap();
        s.dump(both[1], false, &mut split).unwrap();
        for l in [&l4, &l6] {
            let a = l.local_addr().unwrap();
            let find = |v: &[Connection]| v.iter().find(|c| c.local == a).cloned();
            assert_eq!(find(&one), find(&split), "{a} differs between the one-walk and per-family dumps");
        }
    }

    #[test]
    fn live_dump_sees_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = dump(&[DumpSpec { proto: Proto::Tcp, ipv6: false, ulp: true, states: crate::sources::netlink::ALL_STATES }]).unwrap();
        let me = c.iter().find(|c| c.local.port() == port).expect("our listener in the dump");
        assert_eq!(me.state, Some(netstat_common::tcp_state::LISTEN));
        assert!(me.inode > 0);
        assert!(!me.offloaded);
    }
}
