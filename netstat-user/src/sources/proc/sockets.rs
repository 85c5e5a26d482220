//! /proc/net/{tcp,tcp6,udp,udp6}: the fallback socket source when netlink
//! sock_diag is unavailable, and the only one for fixture trees.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use super::{ProcError, hex_word, read_to_string};
use crate::model::{Connection, Proto, SockId};

/// Read one table, e.g. (`tcp6`, Tcp, true). A missing file (IPv6 disabled)
/// is an empty table.
pub fn read_table(proc_root: &Path, name: &str, proto: Proto, ipv6: bool) -> Result<Vec<Connection>, ProcError> {
    let path = proc_root.join("net").join(name);
    match read_to_string(&path) {
        Ok(text) => Ok(parse_table(&text, proto, ipv6)),
        Err(ProcError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

pub fn parse_table(text: &str, proto: Proto, ipv6: bool) -> Vec<Connection> {
    text.lines().skip(1).filter_map(|l| parse_line(l, proto, ipv6)).collect()
}

fn parse_line(line: &str, proto: Proto, ipv6: bool) -> Option<Connection> {
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || !f[0].ends_with(':') {
        return None;
    }
    let local = parse_endpoint(f[1], ipv6)?;
    let remote = parse_endpoint(f[2], ipv6)?;
    let st = u32::from_str_radix(f[3], 16).ok()?;
    let uid = f[7].parse().ok()?;
    let inode = f[9].parse().ok()?;
    Some(Connection {
        proto,
        ipv6,
        local,
        remote,
        state: (proto == Proto::Tcp).then_some(st),
        // /proc/net has no socket cookie.
        id: SockId::default(),
        inode,
        uid: Some(uid),
        offloaded: false,
        owner: None,
    })
}

fn parse_endpoint(s: &str, ipv6: bool) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if ipv6 {
        // 32 hex digits; anything else (multi-byte characters included,
        // which would not split at byte offsets) is malformed.
        if addr.len() != 32 || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[4 * i..4 * i + 4].copy_from_slice(&hex_word(&addr[8 * i..8 * i + 8])?);
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(hex_word(addr)?))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz pass: a 32-byte address with a multi-byte
    /// character across a word boundary panicked instead of being skipped.
    #[test]
    fn a_non_hex_ipv6_address_is_skipped() {
        let hostile = format!("{}\u{e9}{}:0050", "0".repeat(15), "0".repeat(15));
        assert_eq!(hostile.split(':').next().unwrap().len(), 32);
        assert_eq!(parse_endpoint(&hostile, true), None);
        assert!(parse_endpoint("00000000000000000000000001000000:0050", true).is_some());
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 12346 1
   2: 0100007F:00
";

    #[test]
    fn parses_ipv4_rows_and_skips_truncated_ones() {
        let c = parse_table(TCP, Proto::Tcp, false);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].local, "127.0.0.1:80".parse().unwrap());
        assert_eq!(c[0].state, Some(10));
        assert_eq!(c[0].inode, 12345);
        assert_eq!(c[1].remote, "127.0.0.1:54321".parse().unwrap());
        assert_eq!(c[1].uid, Some(1000));
    }

    #[test]
    fn parses_ipv6_words() {
        let t = "hdr\n   0: 00000000000000000000000001000000:0016 0000000000000000FFFF00000100007F:1F90 01 0:0 0:0 0 7 0 99 1\n";
        let c = parse_table(t, Proto::Tcp, true);
        assert_eq!(c[0].local, "[::1]:22".parse().unwrap());
        assert_eq!(c[0].remote, "[::ffff:127.0.0.1]:8080".parse().unwrap());
        assert!(c[0].ipv6);
    }
}
