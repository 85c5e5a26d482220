//! The NDJSON encoder for `--stream --json`: the same objects serde would
//! write from `stream::StreamEvent`, without an allocation per field. At
//! half a million events a second the consumer must stay far below the cost
//! of the churn itself, or the ring fills (a unit test pins equivalence).
use std::net::{IpAddr, Ipv6Addr};

use netstat_common::{AF_INET, Event, IPPROTO_UDP, flags, kind};

use crate::{
    escape::comm_str,
    stream::{kind_name, tcp_state_name},
    timefmt::rfc3339_nanos,
};

/// Formats timestamps, reusing the date and time up to the second.
#[derive(Default)]
pub struct Clock {
    sec: i128,
    prefix: String,
}

impl Clock {
    fn write(&mut self, buf: &mut Vec<u8>, unix_ns: i128) {
        let sec = unix_ns.div_euclid(1_000_000_000);
        if sec != self.sec || self.prefix.is_empty() {
            let full = rfc3339_nanos(sec * 1_000_000_000);
            // "YYYY-MM-DDTHH:MM:SS." (keep up to and including the dot)
            self.prefix = full[..full.len() - 10].to_string();
            self.sec = sec;
        }
        buf.extend_from_slice(self.prefix.as_bytes());
        let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        buf.extend_from_slice(&digits);
        buf.push(b'Z');
    }
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                buf.extend_from_slice(b"\\u00");
                buf.push(b"0123456789abcdef"[(b >> 4) as usize]);
                buf.push(b"0123456789abcdef"[(b & 15) as usize]);
            }
            _ => buf.push(b),
        }
    }
    buf.push(b'"');
}

fn num(buf: &mut Vec<u8>, n: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn key(buf: &mut Vec<u8>, k: &str) {
    buf.push(b',');
    buf.push(b'"');
    buf.extend_from_slice(k.as_bytes());
    buf.extend_from_slice(b"\":");
}

fn ipv4(buf: &mut Vec<u8>, a: &[u8]) {
    for (i, o) in a[..4].iter().enumerate() {
        if i > 0 {
            buf.push(b'.');
        }
        num(buf, *o);
    }
}

fn endpoint(buf: &mut Vec<u8>, family: u16, addr: &[u8; 16], port: u16) {
    buf.push(b'"');
    if family == AF_INET {
        ipv4(buf, addr);
    } else {
        use std::io::Write;
        buf.push(b'[');
        let _ = write!(buf, "{}", IpAddr::V6(Ipv6Addr::from(*addr)));
        buf.push(b']');
    }
    buf.push(b':');
    num(buf, port);
    buf.push(b'"');
}

/// Append one event as a JSON object and a newline.
pub fn write_event(buf: &mut Vec<u8>, e: &Event, clock_offset_ns: i128, clock: &mut Clock) {
    buf.extend_from_slice(b"{\"time\":\"");
    clock.write(buf, e.ts_ns as i128 + clock_offset_ns);
    buf.push(b'"');
    key(buf, "type");
    json_str(buf, kind_name(e.kind));
    let udp = e.protocol == IPPROTO_UDP || matches!(e.kind, kind::UDP_BIND | kind::UDP_CONNECT | kind::UDP_CLOSE);
    key(buf, "proto");
    buf.extend_from_slice(if udp { b"\"udp\"" } else { b"\"tcp\"" });
    key(buf, "family");
    buf.extend_from_slice(if e.family == AF_INET { b"\"ipv4\"" } else { b"\"ipv6\"" });
    key(buf, "local");
    endpoint(buf, e.family, &e.saddr, e.sport);
    key(buf, "remote");
    endpoint(buf, e.family, &e.daddr, e.dport);
    if e.kind == kind::TCP_STATE {
        key(buf, "old_state");
        json_str(buf, tcp_state_name(e.old_state));
        key(buf, "new_state");
        json_str(buf, tcp_state_name(e.new_state));
    }
    let owner_src = e.flags & flags::OWNER_MASK;
    if owner_src != flags::OWNER_NONE {
        key(buf, "pid");
        num(buf, e.tgid);
        key(buf, "tid");
        num(buf, e.pid);
        key(buf, "comm");
        let end = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
        let plain = e.comm[..end].iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"');
        if plain {
            buf.push(b'"');
            buf.extend_from_slice(&e.comm[..end]);
            buf.push(b'"');
        } else {
            json_str(buf, &comm_str(&e.comm));
        }
        key(buf, "uid");
        num(buf, e.uid);
    }
    key(buf, "owner");
    buf.extend_from_slice(match owner_src {
        flags::OWNER_CAPTURED => b"\"captured\"",
        flags::OWNER_CURRENT => b"\"current\"",
        flags::OWNER_LISTENER => b"\"listener\"",
        _ => b"\"none\"",
    });
    if e.netns != 0 {
        key(buf, "netns");
        num(buf, e.netns);
    }
    key(buf, "sock");
    buf.push(b'"');
    {
        use std::io::Write;
        let _ = write!(buf, "{:x}", e.sock);
    }
    buf.push(b'"');
    key(buf, "cookie");
    num(buf, e.cookie);
    if e.kind == kind::UDP_BIND {
        key(buf, "implicit");
        buf.extend_from_slice(if e.flags & flags::IMPLICIT_BIND != 0 { b"true" } else { b"false" });
    }
    if e.flags & flags::HAS_LIFETIME != 0 {
        if e.duration_ns != 0 {
            key(buf, "duration_ns");
            num(buf, e.duration_ns);
        }
        key(buf, "bytes_sent");
        num(buf, e.bytes_acked);
        key(buf, "bytes_received");
        num(buf, e.bytes_received);
    }
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamEvent;
    use netstat_common::{AF_INET6, tcp_state};

    fn events() -> Vec<Event> {
        let mut out = Vec::new();
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.flags = flags::OWNER_LISTENER | flags::HAS_LIFETIME;
        e.ts_ns = 1_234_567_890_123;
        e.tgid = 4242;
        e.pid = 4243;
        e.uid = 1000;
        e.netns = 4026531833;
        e.sock = 0xffff_8881_02a2_ca00;
        e.cookie = 8193;
        e.comm[..4].copy_from_slice(b"curl");
        e.family = AF_INET;
        e.protocol = 6;
        e.sport = 8080;
        e.dport = 51234;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 20, 255, 9]);
        e.old_state = tcp_state::LAST_ACK;
        e.new_state = tcp_state::CLOSE;
        e.duration_ns = 99;
        e.bytes_acked = 5;
        out.push(e);
        let mut h = e;
        h.comm = [0; 16];
        h.comm[..12].copy_from_slice(b"\x1b[31m\"ev\\l\n\xff");
        h.flags = flags::OWNER_CURRENT;
        out.push(h);
        let mut v6 = e;
        v6.family = AF_INET6;
        v6.saddr = Ipv6Addr::LOCALHOST.octets();
        v6.daddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        v6.flags = flags::OWNER_NONE;
        v6.netns = 0;
        out.push(v6);
        let mut u = e;
        u.kind = kind::UDP_BIND;
        u.protocol = IPPROTO_UDP;
        u.flags = flags::OWNER_CURRENT | flags::IMPLICIT_BIND;
        out.push(u);
        let mut a = e;
        a.kind = kind::TCP_ACCEPT;
        a.flags = flags::OWNER_CAPTURED;
        out.push(a);
        out
    }

    #[test]
    fn same_objects_as_serde() {
        let mut clock = Clock::default();
        for (i, e) in events().iter().enumerate() {
            let off = 1_795_478_400_000_000_000 + i as i128 * 1_000_000_007;
            let mut buf = Vec::new();
            write_event(&mut buf, e, off, &mut clock);
            let text = String::from_utf8(buf).unwrap();
            assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{text:?}");
            let fast: serde_json::Value = serde_json::from_str(&text).unwrap();
            let slow = serde_json::to_value(StreamEvent::from_event(e, off)).unwrap();
            assert_eq!(fast, slow, "event {i}");
        }
    }
}
