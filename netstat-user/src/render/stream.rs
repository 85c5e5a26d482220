//! The `--stream` text layout: one line per kernel event (the NDJSON form is
//! `json::event`). Columns are sized to what they hold, as `ss` sizes its
//! own: IPv4 addresses take 21 characters (`255.255.255.255:65535`), so every
//! IPv4 transition line fits in 120 columns; an IPv6 address takes 47
//! (`[ffff:...:ffff]:65535`) on IPv6 lines only, so those stay aligned with
//! each other. Lines are written straight into the caller's buffer: no
//! allocation per line unless a name needs escaping.
use std::{borrow::Cow, fmt, io::Write as _, net::SocketAddr};

use crate::{
    escape::{escape, escape_bytes},
    model::{Change, SockEvent, tcp_state_name},
    timefmt::TimeOfDay,
};

/// Width of an address column on a line whose local address is IPv4.
pub const V4_ADDR_WIDTH: usize = 21;
/// Width of an address column on a line whose local address is IPv6
/// (v4-mapped ones included: the socket is IPv6).
pub const V6_ADDR_WIDTH: usize = 47;

/// Over the IPv4 layout (TIME 15, PID 7 right-aligned, COMM 16, PROTO 5,
/// LOCAL and REMOTE 21, one space between).
pub const TEXT_HEADER: &str =
    "TIME(UTC)           PID COMM             PROTO LOCAL                 REMOTE                EVENT";

/// A lifetime as people read it: `12.3us`, `4.500ms`, `2.000s`.
#[derive(Clone, Copy)]
pub struct Lived(pub u64);

impl fmt::Display for Lived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns < 1_000_000 {
            write!(f, "{:.1}us", ns as f64 / 1e3)
        } else if ns < 1_000_000_000 {
            write!(f, "{:.3}ms", ns as f64 / 1e6)
        } else {
            write!(f, "{:.3}s", ns as f64 / 1e9)
        }
    }
}

/// `Lived` as a string, for layouts that build cells.
pub fn format_duration(ns: u64) -> String {
    Lived(ns).to_string()
}

/// A comm escaped for the terminal; borrowed (no allocation) when it is
/// plain text, as nearly every one is.
fn comm_text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => escape(s),
        Err(_) => Cow::Owned(escape_bytes(b)),
    }
}

/// Append one text line for an event, with its newline, to `out`.
///
/// Written byte by byte rather than through `fmt`: this runs for every
/// kernel event, and `fmt`'s padding and per-integer dispatch cost more than
/// the rest of the text stream together (issue 14). The layout is the one
/// `TEXT_HEADER` names; the tests below hold it.
pub fn write_event(out: &mut Vec<u8>, e: &SockEvent, clock_offset_ns: i128) {
    let width = match e.local {
        SocketAddr::V4(_) => V4_ADDR_WIDTH,
        SocketAddr::V6(_) => V6_ADDR_WIDTH,
    };
    out.extend_from_slice(&TimeOfDay(e.ts_ns as i128 + clock_offset_ns).bytes());
    out.push(b' ');
    match &e.owner {
        Some(o) => {
            let mut n = itoa::Buffer::new();
            pad_left(out, n.format(o.pid).as_bytes(), 7);
            out.push(b' ');
            let comm = comm_text(o.comm.as_bytes());
            out.extend_from_slice(comm.as_bytes());
            pad(out, 16usize.saturating_sub(comm.chars().count()));
        }
        None => out.extend_from_slice(b"      - -               "),
    }
    out.push(b' ');
    push_padded(out, e.proto.key().as_bytes(), 5);
    out.push(b' ');
    socket_addr(out, &e.local, width);
    out.push(b' ');
    socket_addr(out, &e.remote, width);
    out.push(b' ');
    what(out, e.change);
    if let Some(l) = e.lifetime {
        if let Some(d) = l.duration_ns {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "  lived {}", Lived(d));
        }
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"  sent ");
        out.extend_from_slice(n.format(l.bytes_sent).as_bytes());
        out.extend_from_slice(b" B  received ");
        out.extend_from_slice(n.format(l.bytes_received).as_bytes());
        out.extend_from_slice(b" B");
        if l.error != 0 {
            out.extend_from_slice(b"  ");
            out.extend_from_slice(crate::model::errno_name(l.error).as_bytes());
        }
    }
    out.push(b'\n');
}

fn pad(out: &mut Vec<u8>, n: usize) {
    out.resize(out.len() + n, b' ');
}

/// `s` then spaces up to `width` (`{:<width$}` for ASCII).
fn push_padded(out: &mut Vec<u8>, s: &[u8], width: usize) {
    out.extend_from_slice(s);
    pad(out, width.saturating_sub(s.len()));
}

/// Spaces then `s`, right-aligned in `width` (`{:>width$}`).
fn pad_left(out: &mut Vec<u8>, s: &[u8], width: usize) {
    pad(out, width.saturating_sub(s.len()));
    out.extend_from_slice(s);
}

/// An address as `SocketAddr`'s Display writes it, padded to `width`.
fn socket_addr(out: &mut Vec<u8>, a: &SocketAddr, width: usize) {
    let start = out.len();
    match a {
        SocketAddr::V4(v4) => {
            super::push_ipv4(out, *v4.ip());
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
        }
        // IPv6's zero-run compression is std's to get right.
        SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
    pad(out, width.saturating_sub(out.len() - start));
}

/// What happened, as the EVENT column says it.
fn what(out: &mut Vec<u8>, c: Change) {
    let s: &str = match c {
        Change::TcpState { old, new } => {
            out.extend_from_slice(tcp_state_name(old).as_bytes());
            out.extend_from_slice(b" -> ");
            tcp_state_name(new)
        }
        Change::Accept => "ACCEPT",
        Change::Owner { .. } => "OWNER",
        Change::Reset { sent: true, .. } => "RST sent",
        Change::Reset { sent: false, .. } => "RST received",
        Change::UdpBind { implicit: true } => "BIND (implicit)",
        Change::UdpBind { implicit: false } => "BIND",
        Change::UdpConnect => "CONNECT",
        Change::UdpClose => "CLOSE",
        Change::Unknown(_) => "?",
    };
    out.extend_from_slice(s.as_bytes());
}

/// Append the line for events the kernel could not deliver.
pub fn write_lost(out: &mut Vec<u8>, unix_ns: i128, reason: &str, count: u64) {
    let _ = writeln!(out, "{}  LOST {count} events ({reason})", TimeOfDay(unix_ns));
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstat_common::{AF_INET, AF_INET6, Event, flags, kind, tcp_state};

    fn line(e: &Event) -> String {
        let mut out = Vec::new();
        write_event(&mut out, &SockEvent::decode(e), 0);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "{s:?}");
        s.trim_end_matches('\n').to_string()
    }

    fn widest(family: u16) -> Event {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.flags = flags::OWNER_CAPTURED;
        e.tgid = 4_194_304;
        e.comm.copy_from_slice(b"sixteen-char-com");
        e.family = family;
        e.protocol = 6;
        e.old_state = tcp_state::SYN_RECV;
        e.new_state = tcp_state::ESTABLISHED;
        e.saddr = [0xff; 16];
        e.daddr = [0xff; 16];
        e.sport = 65535;
        e.dport = 65535;
        e.ts_ns = 86_399_999_999_999;
        e
    }

    /// Column starts: where each run of spaces ends.
    fn starts(s: &str) -> Vec<usize> {
        let b = s.as_bytes();
        (1..b.len()).filter(|&i| b[i] != b' ' && b[i - 1] == b' ').collect()
    }

    #[test]
    fn text_line_is_escaped_and_shows_lifetime() {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.flags = flags::OWNER_LISTENER | flags::HAS_LIFETIME;
        e.tgid = 4242;
        e.comm[..12].copy_from_slice(b"\x1b[31mevil\n\0\0");
        e.family = AF_INET;
        e.protocol = 6;
        e.old_state = tcp_state::SYN_RECV;
        e.new_state = tcp_state::CLOSE;
        e.duration_ns = 1_500_000;
        let l = line(&e);
        assert!(!l.contains('\x1b') && !l.contains('\n'), "{l:?}");
        assert!(l.contains("SYN_RECEIVED -> CLOSED"), "{l}");
        assert!(l.contains("lived 1.500ms"), "{l}");
        assert!(l.contains(" 4242 \\x1b[31mevil\\n"), "{l}");
        // Invalid UTF-8 in a comm stays visible.
        e.comm[..3].copy_from_slice(b"\xff\xfeX");
        assert!(line(&e).contains("\\xff\\xfeX"), "{}", line(&e));
    }

    #[test]
    fn the_widest_ipv4_line_fits_120_columns_under_its_header() {
        let e = widest(AF_INET);
        let l = line(&e);
        assert_eq!(l, "23:59:59.999999 4194304 sixteen-char-com tcp   255.255.255.255:65535 255.255.255.255:65535 SYN_RECEIVED -> ESTABLISHED");
        assert!(l.len() <= 120, "{} columns: {l}", l.len());
        // The header's columns start where the line's do (EVENT's two words
        // aside); PID is right-aligned, so its title ends where the PIDs end.
        let (h, s) = (starts(TEXT_HEADER), starts(&l));
        assert_eq!(h[1..], s[1..h.len()], "\n{TEXT_HEADER}\n{l}");
        assert_eq!(TEXT_HEADER.find(" PID ").unwrap() + 4, l.find(" sixteen").unwrap(), "\n{TEXT_HEADER}\n{l}");
    }

    #[test]
    fn ipv6_lines_are_aligned_with_each_other_whatever_the_address() {
        let wide = widest(AF_INET6);
        let mut narrow = widest(AF_INET6);
        narrow.saddr = [0; 16];
        narrow.saddr[15] = 1;
        narrow.daddr = narrow.saddr;
        narrow.sport = 1;
        narrow.dport = 2;
        let (a, b) = (line(&wide), line(&narrow));
        assert!(b.contains(" [::1]:1 "), "{b}");
        let ev = |s: &str| s.find("SYN_RECEIVED").unwrap();
        assert_eq!(ev(&a), ev(&b), "\n{a}\n{b}");
        assert!(a.contains("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535 [ffff"), "{a}");
    }

    /// The line as the `fmt` layout wrote it before the byte writer
    /// replaced it: the two must agree on every kind of event.
    fn fmt_line(e: &SockEvent) -> String {
        use std::fmt::Write as _;
        let width = if e.local.is_ipv4() { V4_ADDR_WIDTH } else { V6_ADDR_WIDTH };
        let mut s = String::new();
        let time = crate::timefmt::TimeOfDay(e.ts_ns as i128);
        match &e.owner {
            Some(o) => write!(s, "{time} {:>7} {:<16} ", o.pid, comm_text(o.comm.as_bytes())).unwrap(),
            None => write!(s, "{time} {:>7} {:<16} ", "-", "-").unwrap(),
        }
        let mut ev = Vec::new();
        what(&mut ev, e.change);
        write!(s, "{:<5} {:<width$} {:<width$} {}", e.proto.key(), e.local, e.remote, String::from_utf8(ev).unwrap()).unwrap();
        if let Some(l) = e.lifetime {
            if let Some(d) = l.duration_ns {
                write!(s, "  lived {}", Lived(d)).unwrap();
            }
            write!(s, "  sent {} B  received {} B", l.bytes_sent, l.bytes_received).unwrap();
            if l.error != 0 {
                write!(s, "  {}", crate::model::errno_name(l.error)).unwrap();
            }
        }
        s
    }

    #[test]
    fn byte_writer_matches_the_fmt_layout() {
        let mut n = 0;
        for family in [AF_INET, AF_INET6] {
            for k in [kind::TCP_STATE, kind::TCP_ACCEPT, kind::TCP_OWNER, kind::TCP_RESET, kind::UDP_BIND, kind::UDP_CONNECT, kind::UDP_CLOSE, 99] {
                for (i, (tgid, comm)) in [(0u32, &b""[..]), (1, b"a"), (4_194_304, b"sixteen-char-com"), (77, "caf\u{e9}-\u{1f600}".as_bytes()), (5, b"\x1b[1m\xff")].into_iter().enumerate() {
                    let mut e = widest(family);
                    e.kind = k;
                    e.flags = if tgid == 0 { 0 } else { flags::OWNER_CURRENT };
                    e.flags |= if i % 2 == 0 { flags::HAS_LIFETIME | flags::RESET_SENT } else { flags::IMPLICIT_BIND };
                    e.tgid = tgid;
                    e.comm = [0; 16];
                    e.comm[..comm.len()].copy_from_slice(comm);
                    e.saddr = [0; 16];
                    e.saddr[..4].copy_from_slice(&[10, 0, i as u8 * 60, 255]);
                    e.saddr[15] = i as u8;
                    e.sport = [0, 1, 80, 9999, 65535][i];
                    e.dport = [65535, 22, 0, 443, 7][i];
                    e.old_state = i as u32;
                    e.new_state = 12 - i as u32;
                    e.ts_ns = [0, 59_999_999, 3_600_000_000_123, 86_399_999_999_999, 123_456_789_012_345][i];
                    e.duration_ns = [0, 999, 1_000_000, 2_500_000_000, 7][i];
                    e.bytes_acked = [0, 1, 1 << 40, 17, u64::MAX][i];
                    e.bytes_received = i as u64 * 1000;
                    e.sk_err = [0, 104, 0, 110, 111][i];
                    let s = SockEvent::decode(&e);
                    let mut out = Vec::new();
                    write_event(&mut out, &s, 0);
                    assert_eq!(String::from_utf8(out).unwrap(), fmt_line(&s) + "\n");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 80);
    }

    #[test]
    fn lost_line_and_ownerless_events() {
        let mut out = Vec::new();
        write_lost(&mut out, 1_000, "ring_full", 7);
        assert_eq!(out, b"00:00:00.000001  LOST 7 events (ring_full)\n");
        let mut e = widest(AF_INET);
        e.flags = 0;
        e.tgid = 0;
        let l = line(&e);
        assert!(l.starts_with("23:59:59.999999       - -                tcp "), "{l}");
    }
}
