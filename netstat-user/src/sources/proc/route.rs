//! /proc/net/route and /proc/net/ipv6_route (the kernel's main routing
//! table for IPv4; every table the kernel lists for IPv6), and the IPv4
//! local table's local and broadcast routes from /proc/net/fib_trie.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use super::{ProcError, hex_word, read_to_string};

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF_REJECT: u32 = 0x200;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route4 {
    pub destination: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// None: on-link.
    pub gateway: Option<Ipv4Addr>,
    pub interface: String,
    /// The interface's address the route sends from (netstat's Interface
    /// column); None when no address of the interface is known.
    pub interface_addr: Option<Ipv4Addr>,
    pub metric: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// An address of this host (`/32`), or a prefix it answers for (127/8).
    Local,
    Broadcast,
}

/// A route of the kernel's `local` table (table 255), which /proc/net/route
/// does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRoute {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub kind: LocalKind,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route6 {
    pub destination: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv6Addr>,
    pub interface: String,
    pub metric: u32,
}

fn missing_is_empty(r: Result<String, ProcError>) -> Result<String, ProcError> {
    match r {
        Err(ProcError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        r => r,
    }
}

pub fn read_v4(proc_root: &Path) -> Result<Vec<Route4>, ProcError> {
    Ok(parse_v4(&missing_is_empty(read_to_string(&proc_root.join("net/route")))?))
}

pub fn read_v6(proc_root: &Path) -> Result<Vec<Route6>, ProcError> {
    Ok(parse_v6(&missing_is_empty(read_to_string(&proc_root.join("net/ipv6_route")))?))
}

pub fn parse_v4(text: &str) -> Vec<Route4> {
    let mut out: Vec<Route4> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            if flags & RTF_UP == 0 {
                return None;
            }
            let gw = Ipv4Addr::from(hex_word(f[2])?);
            Some(Route4 {
                interface: f[0].to_string(),
                interface_addr: None,
                destination: Ipv4Addr::from(hex_word(f[1])?),
                gateway: (flags & RTF_GATEWAY != 0).then_some(gw),
                metric: f[6].parse().ok()?,
                netmask: Ipv4Addr::from(hex_word(f[7])?),
            })
        })
        .collect();
    out.sort_by_key(|r| (r.destination, std::cmp::Reverse(r.netmask), r.metric));
    out
}

pub fn read_local(proc_root: &Path) -> Result<Vec<LocalRoute>, ProcError> {
    Ok(parse_fib_trie(&missing_is_empty(read_to_string(&proc_root.join("net/fib_trie")))?))
}

/// /proc/net/fib_trie: a leaf line `|-- ADDR` followed by one line per
/// route on it, `/PLEN SCOPE TYPE`. LOCAL and BROADCAST routes only ever
/// live in the local table, so they are taken from whichever table the
/// trie prints them under (the kernel prints one merged trie under both
/// names until a policy rule splits them), once each.
pub fn parse_fib_trie(text: &str) -> Vec<LocalRoute> {
    let mut out: Vec<LocalRoute> = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
            continue;
        }
        if t.starts_with("+-- ") || !t.starts_with('/') {
            if !t.starts_with('/') {
                leaf = None;
            }
            continue;
        }
        let Some(destination) = leaf else { continue };
        let mut f = t[1..].split_whitespace();
        let (Some(plen), Some(_scope), Some(kind)) = (f.next(), f.next(), f.next()) else { continue };
        let Some(prefix_len) = plen.parse::<u8>().ok().filter(|p| *p <= 32) else { continue };
        let kind = match kind {
            "LOCAL" => LocalKind::Local,
            "BROADCAST" => LocalKind::Broadcast,
            _ => continue,
        };
        let r = LocalRoute { destination, prefix_len, kind };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// A netmask of `prefix_len` bits.
pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0))
}

fn hex16(s: &str) -> Option<Ipv6Addr> {
    if s.len() != 32 {
        return None;
    }
    u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from)
}

pub fn parse_v6(text: &str) -> Vec<Route6> {
    let mut out: Vec<Route6> = text
        .lines()
        .filter_map(|l| {
            // dst plen src plen nexthop metric refcnt use flags iface
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
                return None;
            }
            let nexthop = hex16(f[4])?;
            Some(Route6 {
                destination: hex16(f[0])?,
                prefix_len: u8::from_str_radix(f[1], 16).ok().filter(|p| *p <= 128)?,
                gateway: (flags & RTF_GATEWAY != 0 || !nexthop.is_unspecified()).then_some(nexthop),
                metric: u32::from_str_radix(f[5], 16).ok()?,
                interface: f[9].to_string(),
            })
        })
        .collect();
    out.sort_by_key(|r| (r.destination, r.prefix_len, r.metric));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_default_and_onlink() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t000300C0\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t0003\n";
        let r = parse_v4(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r[0].metric, 100);
        assert_eq!(r[1].destination, Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(r[1].netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(r[1].gateway, None);
    }

    #[test]
    fn fib_trie_local_and_broadcast_once() {
        let t = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n     |-- 192.0.2.0\n        /24 link UNICAST\n     |-- 192.0.2.2\n        /32 host LOCAL\n     |-- bogus\n        /32 host LOCAL\n     |-- 192.0.2.9\n        /99 host LOCAL\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        let r = parse_fib_trie(t);
        let got: Vec<(String, u8, LocalKind)> = r.iter().map(|r| (r.destination.to_string(), r.prefix_len, r.kind)).collect();
        assert_eq!(
            got,
            [
                ("127.0.0.0".into(), 8, LocalKind::Local),
                ("127.0.0.1".into(), 32, LocalKind::Local),
                ("127.255.255.255".into(), 32, LocalKind::Broadcast),
                ("192.0.2.2".into(), 32, LocalKind::Local),
            ]
        );
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn ipv6_skips_reject_routes() {
        let t = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let r = parse_v6(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].destination, Ipv6Addr::UNSPECIFIED);
        assert_eq!(r[0].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(r[0].metric, 1024);
        assert_eq!(r[1].prefix_len, 64);
        assert_eq!(r[1].gateway, None);
    }
}
