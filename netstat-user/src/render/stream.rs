//! The `--stream` text layout: one line per kernel event (the NDJSON form is
//! `json::event`).
use crate::{
    escape::escape_bytes,
    model::{Change, SockEvent, tcp_state_name},
    timefmt::rfc3339_nanos,
};

pub const TEXT_HEADER: &str = "TIME                               PID  COMM             PROTO LOCAL                                          REMOTE                                         EVENT";

/// A lifetime as people read it: `12.3us`, `4.500ms`, `2.000s`.
pub fn format_duration(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

/// One text line (no newline) for an event.
pub fn event_line(e: &SockEvent, clock_offset_ns: i128) -> String {
    let what = match e.change {
        Change::TcpState { old, new } => format!("{} -> {}", tcp_state_name(old), tcp_state_name(new)),
        Change::Accept => "ACCEPT".to_string(),
        Change::UdpBind { implicit: true } => "BIND (implicit)".to_string(),
        Change::UdpBind { implicit: false } => "BIND".to_string(),
        Change::UdpConnect => "CONNECT".to_string(),
        Change::UdpClose => "CLOSE".to_string(),
        Change::Unknown(_) => "?".to_string(),
    };
    let (pid, comm) = match &e.owner {
        Some(o) => (o.pid.to_string(), escape_bytes(o.comm.as_bytes())),
        None => ("-".to_string(), "-".to_string()),
    };
    let mut line = format!(
        "{}  {:>7}  {:<16} {:<4} {:<46} {:<46} {}",
        rfc3339_nanos(e.ts_ns as i128 + clock_offset_ns),
        pid,
        comm,
        e.proto.key(),
        e.local.to_string(),
        e.remote.to_string(),
        what
    );
    if let Some(l) = e.lifetime {
        if let Some(d) = l.duration_ns {
            line.push_str(&format!("  lived {}", format_duration(d)));
        }
        line.push_str(&format!("  sent {} B  received {} B", l.bytes_sent, l.bytes_received));
    }
    line
}

/// The text line for events the kernel could not deliver.
pub fn lost_line(unix_ns: i128, reason: &str, count: u64) -> String {
    format!("{}  LOST {count} events ({reason})", rfc3339_nanos(unix_ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstat_common::{AF_INET, Event, flags, kind, tcp_state};

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
        let l = event_line(&SockEvent::decode(&e), 0);
        assert!(!l.contains('\x1b') && !l.contains('\n'), "{l:?}");
        assert!(l.contains("SYN_RECEIVED -> CLOSED"), "{l}");
        assert!(l.contains("lived 1.500ms"), "{l}");
        assert!(l.contains("4242  \\x1b[31mevil\\n"), "{l}");
    }
}
