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

/// What happened, as the EVENT column says it.
struct What(Change);

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Change::TcpState { old, new } => write!(f, "{} -> {}", tcp_state_name(old), tcp_state_name(new)),
            Change::Accept => f.write_str("ACCEPT"),
            Change::Owner { .. } => f.write_str("OWNER"),
            Change::Reset { sent: true, .. } => f.write_str("RST sent"),
            Change::Reset { sent: false, .. } => f.write_str("RST received"),
            Change::UdpBind { implicit: true } => f.write_str("BIND (implicit)"),
            Change::UdpBind { implicit: false } => f.write_str("BIND"),
            Change::UdpConnect => f.write_str("CONNECT"),
            Change::UdpClose => f.write_str("CLOSE"),
            Change::Unknown(_) => f.write_str("?"),
        }
    }
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
pub fn write_event(out: &mut Vec<u8>, e: &SockEvent, clock_offset_ns: i128) {
    let width = match e.local {
        SocketAddr::V4(_) => V4_ADDR_WIDTH,
        SocketAddr::V6(_) => V6_ADDR_WIDTH,
    };
    let time = TimeOfDay(e.ts_ns as i128 + clock_offset_ns);
    // Writing into a Vec cannot fail.
    let _ = match &e.owner {
        Some(o) => write!(out, "{time} {:>7} {:<16} ", o.pid, comm_text(o.comm.as_bytes())),
        None => write!(out, "{time} {:>7} {:<16} ", "-", "-"),
    };
    let _ = write!(out, "{:<5} {:<width$} {:<width$} {}", e.proto.key(), e.local, e.remote, What(e.change));
    if let Some(l) = e.lifetime {
        if let Some(d) = l.duration_ns {
            let _ = write!(out, "  lived {}", Lived(d));
        }
        let _ = write!(out, "  sent {} B  received {} B", l.bytes_sent, l.bytes_received);
        if l.error != 0 {
            let _ = write!(out, "  {}", crate::model::errno_name(l.error));
        }
    }
    out.push(b'\n');
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
