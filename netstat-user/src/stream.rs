//! `--stream`: kernel events as text lines or NDJSON, one per event, as they
//! happen. Owns the event-to-output mapping; the tracer owns the kernel side.
use std::{
    io::{BufWriter, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use netstat_common::{AF_INET, Event, IPPROTO_UDP, flags, kind};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

pub use crate::model::tcp_state_name;
use crate::{
    config::Config,
    escape::{comm_str, escape},
    timefmt::rfc3339_nanos,
    tracer::{Record, Tracer, TracerOptions, plan},
};

/// Exit status of `--stream --fail-on-loss` when events were lost.
pub const EXIT_LOST: u8 = 3;

pub fn kind_name(k: u32) -> &'static str {
    match k {
        kind::TCP_STATE => "tcp_state",
        kind::TCP_ACCEPT => "tcp_accept",
        kind::UDP_BIND => "udp_bind",
        kind::UDP_CONNECT => "udp_connect",
        kind::UDP_CLOSE => "udp_close",
        _ => "unknown",
    }
}

fn owner_source(f: u32) -> &'static str {
    match f & flags::OWNER_MASK {
        flags::OWNER_CAPTURED => "captured",
        flags::OWNER_CURRENT => "current",
        flags::OWNER_LISTENER => "listener",
        _ => "none",
    }
}

fn ip(family: u16, a: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

pub fn local_addr(e: &Event) -> SocketAddr {
    SocketAddr::new(ip(e.family, &e.saddr), e.sport)
}

pub fn remote_addr(e: &Event) -> SocketAddr {
    SocketAddr::new(ip(e.family, &e.daddr), e.dport)
}

/// One NDJSON object.
#[derive(Serialize)]
pub struct StreamEvent<'a> {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub implicit: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl<'a> StreamEvent<'a> {
    fn blank(time: String, kind: &'static str) -> Self {
        StreamEvent {
            time,
            kind,
            proto: None,
            family: None,
            local: None,
            remote: None,
            old_state: None,
            new_state: None,
            pid: None,
            tid: None,
            comm: None,
            uid: None,
            owner: None,
            netns: None,
            sock: None,
            cookie: None,
            implicit: None,
            duration_ns: None,
            bytes_sent: None,
            bytes_received: None,
            count: None,
            reason: None,
        }
    }

    pub fn from_event(e: &Event, clock_offset_ns: i128) -> Self {
        let mut s = StreamEvent::blank(rfc3339_nanos(e.ts_ns as i128 + clock_offset_ns), kind_name(e.kind));
        let udp = e.protocol == IPPROTO_UDP || matches!(e.kind, kind::UDP_BIND | kind::UDP_CONNECT | kind::UDP_CLOSE);
        s.proto = Some(if udp { "udp" } else { "tcp" });
        s.family = Some(if e.family == AF_INET { "ipv4" } else { "ipv6" });
        s.local = Some(local_addr(e).to_string());
        s.remote = Some(remote_addr(e).to_string());
        if e.kind == kind::TCP_STATE {
            s.old_state = Some(tcp_state_name(e.old_state));
            s.new_state = Some(tcp_state_name(e.new_state));
        }
        let owned = e.flags & flags::OWNER_MASK != flags::OWNER_NONE;
        if owned {
            s.pid = Some(e.tgid);
            s.tid = Some(e.pid);
            s.comm = Some(comm_str(&e.comm));
            s.uid = Some(e.uid);
        }
        s.owner = Some(owner_source(e.flags));
        s.netns = (e.netns != 0).then_some(e.netns);
        s.sock = Some(format!("{:x}", e.sock));
        s.cookie = Some(e.cookie);
        if e.kind == kind::UDP_BIND {
            s.implicit = Some(e.flags & flags::IMPLICIT_BIND != 0);
        }
        if e.flags & flags::HAS_LIFETIME != 0 {
            s.duration_ns = (e.duration_ns != 0).then_some(e.duration_ns);
            s.bytes_sent = Some(e.bytes_acked);
            s.bytes_received = Some(e.bytes_received);
        }
        s
    }

    pub fn lost(time: String, reason: &'a str, count: u64) -> Self {
        let mut s = StreamEvent::blank(time, "lost");
        s.count = Some(count);
        s.reason = Some(reason);
        s
    }
}

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
pub fn text_line(e: &Event, clock_offset_ns: i128) -> String {
    let s = StreamEvent::from_event(e, clock_offset_ns);
    let what = match e.kind {
        kind::TCP_STATE => format!("{} -> {}", tcp_state_name(e.old_state), tcp_state_name(e.new_state)),
        kind::TCP_ACCEPT => "ACCEPT".to_string(),
        kind::UDP_BIND if e.flags & flags::IMPLICIT_BIND != 0 => "BIND (implicit)".to_string(),
        kind::UDP_BIND => "BIND".to_string(),
        kind::UDP_CONNECT => "CONNECT".to_string(),
        kind::UDP_CLOSE => "CLOSE".to_string(),
        _ => "?".to_string(),
    };
    let mut line = format!(
        "{}  {:>7}  {:<16} {:<4} {:<46} {:<46} {}",
        s.time,
        s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        s.comm.as_deref().unwrap_or("-"),
        s.proto.unwrap_or("?"),
        s.local.as_deref().unwrap_or(""),
        s.remote.as_deref().unwrap_or(""),
        what
    );
    if e.flags & flags::HAS_LIFETIME != 0 {
        if e.duration_ns != 0 {
            line.push_str(&format!("  lived {}", format_duration(e.duration_ns)));
        }
        line.push_str(&format!("  sent {} B  received {} B", e.bytes_acked, e.bytes_received));
    }
    line
}

pub const TEXT_HEADER: &str = "TIME                               PID  COMM             PROTO LOCAL                                          REMOTE                                         EVENT";

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(stream(cfg))
}

async fn stream(cfg: &Config) -> anyhow::Result<ExitCode> {
    let opts = TracerOptions::from_config(cfg);
    let mut tracer = Tracer::start(&opts)?;
    for w in plan::warnings(&tracer.report) {
        eprintln!("netstat: {w}");
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let deadline = (cfg.duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(cfg.duration));
    // For the hardening tests: a panic with everything attached must leave nothing behind.
    let panic_at = std::env::var("NETSTAT_TEST_PANIC_AFTER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if !cfg.json {
        writeln!(out, "{TEXT_HEADER}")?;
        out.flush()?;
    }
    let mut batch = Vec::with_capacity(4096);
    let mut enc = (Vec::with_capacity(512), crate::ndjson::Clock::default());
    let mut events: u64 = 0;
    let mut lost: u64 = 0;
    let mut stop = false;
    // Whether the ring still held a full batch at the last `finish`.
    let mut more = false;
    while !stop || more {
        if more {
            more = tracer.finish(&mut batch);
        } else {
            tokio::select! {
                _ = sigint.recv() => stop = true,
                _ = sigterm.recv() => stop = true,
                _ = sighup.recv() => stop = true,
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => stop = true,
                _ = async { tokio::time::sleep_until(panic_at.unwrap()).await }, if panic_at.is_some() => {
                    panic!("NETSTAT_TEST_PANIC_AFTER_MS: panicking with every program attached")
                }
                r = tracer.next_batch(&mut batch) => r?,
            }
            if stop {
                // What is already in the ring was seen by the kernel: print it
                // (a batch at a time, until `finish` says the ring is empty).
                more = tracer.finish(&mut batch);
            }
        }
        for rec in batch.drain(..) {
            match &rec {
                Record::Event(_) => events += 1,
                Record::Lost { count, .. } => lost += count,
                Record::Bad(_) => {}
            }
            write_record(&mut out, &rec, cfg.json, tracer.clock_offset_ns, &mut enc)?;
            if cfg.count > 0 && events >= cfg.count {
                stop = true;
                more = false;
                break;
            }
        }
        out.flush()?;
    }
    drop(tracer);
    if lost > 0 {
        eprintln!("netstat: {lost} kernel events lost (ring buffer {} bytes; raise --ring-size)", cfg.ring_size);
        if cfg.fail_on_loss {
            return Ok(ExitCode::from(EXIT_LOST));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_record(
    out: &mut impl Write,
    rec: &Record,
    json: bool,
    clock_offset_ns: i128,
    enc: &mut (Vec<u8>, crate::ndjson::Clock),
) -> std::io::Result<()> {
    let now = || rfc3339_nanos(crate::timefmt::realtime_offset_ns() + crate::timefmt::monotonic_ns() as i128);
    match rec {
        Record::Event(e) if json => {
            enc.0.clear();
            crate::ndjson::write_event(&mut enc.0, e, clock_offset_ns, &mut enc.1);
            out.write_all(&enc.0)
        }
        Record::Event(e) => writeln!(out, "{}", text_line(e, clock_offset_ns)),
        Record::Lost { reason, count } if json => {
            serde_json::to_writer(&mut *out, &StreamEvent::lost(now(), reason, *count))?;
            out.write_all(b"\n")
        }
        Record::Lost { reason, count } => writeln!(out, "{}  LOST {count} events ({reason})", now()),
        Record::Bad(e) => {
            eprintln!("netstat: undecodable kernel record: {}", escape(&e.to_string()));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstat_common::tcp_state;

    fn sample() -> Event {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.flags = flags::OWNER_LISTENER;
        e.ts_ns = 5;
        e.tgid = 4242;
        e.pid = 4243;
        e.comm[..12].copy_from_slice(b"\x1b[31mevil\n\0\0");
        e.family = AF_INET;
        e.protocol = 6;
        e.sport = 8080;
        e.dport = 51234;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        e.old_state = tcp_state::SYN_RECV;
        e.new_state = tcp_state::ESTABLISHED;
        e
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v = serde_json::to_value(StreamEvent::from_event(&sample(), 0)).unwrap();
        assert_eq!(v["type"], "tcp_state");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["local"], "127.0.0.1:8080");
        assert_eq!(v["remote"], "127.0.0.2:51234");
        assert_eq!(v["old_state"], "SYN_RECEIVED");
        assert_eq!(v["new_state"], "ESTABLISHED");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["owner"], "listener");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000000005Z");
        // comm is escaped before it is ever printed.
        assert_eq!(v["comm"], "\\x1b[31mevil\\n");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut e = sample();
        e.family = netstat_common::AF_INET6;
        e.saddr = std::net::Ipv6Addr::LOCALHOST.octets();
        e.daddr = std::net::Ipv6Addr::LOCALHOST.octets();
        let v = serde_json::to_value(StreamEvent::from_event(&e, 0)).unwrap();
        assert_eq!(v["local"], "[::1]:8080");
        assert_eq!(v["family"], "ipv6");
    }

    #[test]
    fn unowned_events_have_no_pid() {
        let mut e = sample();
        e.flags = flags::OWNER_NONE;
        let v = serde_json::to_value(StreamEvent::from_event(&e, 0)).unwrap();
        assert!(v.get("pid").is_none());
        assert_eq!(v["owner"], "none");
    }

    #[test]
    fn text_line_is_escaped_and_shows_lifetime() {
        let mut e = sample();
        e.new_state = tcp_state::CLOSE;
        e.flags |= flags::HAS_LIFETIME;
        e.duration_ns = 1_500_000;
        let l = text_line(&e, 0);
        assert!(!l.contains('\x1b') && !l.contains('\n'), "{l:?}");
        assert!(l.contains("SYN_RECEIVED -> CLOSED"), "{l}");
        assert!(l.contains("lived 1.500ms"), "{l}");
    }
}
