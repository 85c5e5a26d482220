//! One display of the live table: the connection list, `Closed since last
//! display` and the footer (losses, dropped rows), or the same as one JSON
//! document (`live_document` of the schema).
use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use super::{connections, json, stream::format_duration};
use crate::{
    cli::config::Config,
    escape::escape_bytes,
    model::{ClosedConnection, Connection, Proto, tcp_state_name},
    sources::{netns::Labels, resolve::Resolver},
    timefmt::rfc3339_nanos,
};

/// What one display shows; times are CLOCK_MONOTONIC ns, turned into wall
/// clock with `clock_offset_ns`.
pub struct LiveDisplay<'a> {
    pub now_ns: u64,
    pub clock_offset_ns: i128,
    pub conns: &'a [&'a Connection],
    /// Already filtered for this display, oldest first.
    pub closed: &'a [ClosedConnection],
    pub lost_events: u64,
    pub lost_since_ns: Option<u64>,
    pub lost_by_reason: &'a BTreeMap<&'static str, u64>,
    pub dropped: u64,
    /// --all-namespaces: the Namespace column's labels.
    pub labels: Option<&'a Labels>,
}

impl LiveDisplay<'_> {
    fn wall(&self, ns: u64) -> String {
        rfc3339_nanos(ns as i128 + self.clock_offset_ns)
    }
}

pub fn write(d: &LiveDisplay, cfg: &Config, names: Option<&Resolver>, w: &mut impl Write) -> io::Result<()> {
    if cfg.json {
        return write_json(d, cfg, names, w);
    }
    connections::write(d.conns.iter().copied(), cfg, names, d.labels, w)?;
    write_closed(d.closed, cfg, names, d.labels, w)?;
    let since = d.lost_since_ns.map(|n| d.wall(n));
    footer(d.lost_events, since.as_deref(), d.lost_by_reason, d.dropped, cfg.max_rows, w)
}

fn write_json(d: &LiveDisplay, cfg: &Config, names: Option<&Resolver>, w: &mut impl Write) -> io::Result<()> {
    let rows = connections::select(d.conns.iter().copied(), cfg);
    if let Some(r) = names {
        r.prepare(rows.iter().flat_map(|c| [c.local.ip(), c.remote.ip()]));
    }
    let mut buf = Vec::with_capacity(4096);
    let mut o = json::Obj::document(&mut buf);
    o.str("time", &d.wall(d.now_ns));
    json::array(&mut o, "connections", &rows, |b, c| connections::json_row(b, c, cfg, names));
    json::array(&mut o, "closed", d.closed, |b, c| connections::json_closed(b, c, cfg, names, d.clock_offset_ns));
    o.u64("lost_events", d.lost_events);
    match d.lost_since_ns {
        Some(t) => o.str("lost_since", &d.wall(t)),
        None => o.null("lost_since"),
    }
    o.serde("lost_by_reason", d.lost_by_reason);
    o.u64("dropped_rows", d.dropped);
    o.u64("row_cap", cfg.max_rows as u64);
    o.end();
    buf.push(b'\n');
    w.write_all(&buf)
}

/// `Closed since last display`: its own header line (`Final State`, `Lived`)
/// after a blank line, so a script reading the table stops at the first
/// blank line after the rows. Fields as in the table (two spaces apart, the
/// local side numeric); the PID is the process that held the socket until
/// it closed it, as the kernel captured it, 0 when none is known.
fn write_closed(
    closed: &[ClosedConnection],
    cfg: &Config,
    names: Option<&Resolver>,
    labels: Option<&Labels>,
    w: &mut impl Write,
) -> io::Result<()> {
    writeln!(w, "\nClosed since last display\n")?;
    let ns = if labels.is_some() { "    Namespace" } else { "" };
    let head = format!("  {:<7}{:<23}{:<23}{:<16}{:<9}Lived{ns}", "Proto", "Local Address", "Foreign Address", "Final State", "PID");
    writeln!(w, "{head}")?;
    let ns_at = head.find("Namespace").unwrap_or(0);
    let mut line = String::with_capacity(128);
    for c in closed {
        let conn = &c.conn;
        line.clear();
        line.push_str("  ");
        let state = conn.state.map(tcp_state_name).unwrap_or("");
        let foreign = if conn.proto == Proto::Udp && conn.remote.port() == 0 {
            "*:*".to_string()
        } else {
            connections::endpoint(conn.remote, conn.proto, names, true, cfg.fqdn)
        };
        let pid = connections::pid_cell(conn).to_string();
        for (text, width, sep) in
            [(conn.proto.name(), 5, "  "), (&conn.local.to_string(), 21, "  "), (&foreign, 21, "  "), (state, 12, "    "), (&pid, 7, "  ")]
        {
            connections::field(&mut line, text, width);
            line.push_str(sep);
        }
        let lived = c.duration_ns.map(format_duration).unwrap_or_else(|| "-".into());
        match labels {
            Some(l) => {
                line.push_str(&lived);
                connections::namespace_cell(&mut line, conn, l, ns_at);
            }
            None => line.push_str(&lived),
        }
        line.push('\n');
        if cfg.executable {
            match &conn.owner {
                Some(o) => {
                    let name = match &o.exe {
                        Some(p) if cfg.verbose => escape_bytes(p.as_os_str().as_encoded_bytes()),
                        Some(p) => p.file_name().map(|f| escape_bytes(f.as_encoded_bytes())).unwrap_or_default(),
                        None => escape_bytes(o.comm.as_bytes()),
                    };
                    connections::service_line(&mut line, o);
                    if cfg.verbose {
                        connections::lineage_line(&mut line, o);
                    }
                    line.push_str(&format!(" [{name}]\n"));
                }
                None => line.push_str(" Can not obtain ownership information\n"),
            }
        }
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Losses and dropped rows, when there were any.
fn footer(
    lost_events: u64,
    lost_since: Option<&str>,
    by_reason: &BTreeMap<&'static str, u64>,
    dropped: u64,
    row_cap: usize,
    w: &mut impl Write,
) -> io::Result<()> {
    if lost_events > 0 {
        let reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(
            w,
            "\ntable may be incomplete: {lost_events} events lost since {} ({})",
            lost_since.unwrap_or("start"),
            reasons.join(", ")
        )?;
    }
    if dropped > 0 {
        writeln!(w, "{dropped} rows dropped (row cap {row_cap}; raise --max-rows)")?;
    }
    Ok(())
}
