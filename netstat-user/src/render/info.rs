//! Text for -e (Interface Statistics), -r (Interface List and route tables)
//! and -s (protocol statistics) in netstat's layout, and their JSON forms.
use std::io::{self, Write};

use serde::{Serialize, Serializer, ser::SerializeMap};

use super::{cell, rcell};
use crate::{
    cli::config::Family,
    escape::escape,
    sources::delta::{DevRows, ErrorShare, Share, dev_rows},
    sources::info::{InterfaceReport, RouteReport, Rows, Section},
    sources::proc::dev::DevCounters,
};

/// Linux has no routes kept apart to be restored at boot (`route -p`):
/// every route is active or absent, so the section is always empty.
const NO_PERSISTENT_ROUTES: &str = "Persistent Routes:\n  None";
const RULE: &str = "===========================================================================";

fn signed(n: i128) -> String {
    format!("{n:+}")
}

fn dev_block(d: &DevCounters, delta: Option<&DevRows>, w: &mut impl Write) -> io::Result<()> {
    // Numbers right-aligned to fixed column ends (35, 51), as netstat does;
    // --delta's changes to 67 and 83.
    let row = |w: &mut dyn Write, cells: [&str; 5]| -> io::Result<()> {
        let mut l = cells[0].to_string();
        for (cell, end) in cells[1..].iter().zip([35usize, 51, 67, 83]) {
            if !cell.is_empty() {
                let end = end.saturating_sub(l.chars().count());
                rcell(&mut l, cell, end);
            }
        }
        writeln!(w, "{l}")
    };
    let (rx_head, tx_head) = if delta.is_some() { ("+Received", "+Sent") } else { ("", "") };
    row(w, ["", "Received", "Sent", rx_head, tx_head])?;
    writeln!(w)?;
    let num = |v: Option<i128>| v.map_or("-".to_string(), |n| n.to_string());
    let change = |v: Option<i128>| if delta.is_some() { v.map_or("-".to_string(), signed) } else { String::new() };
    for (name, rx, tx) in dev_rows(d) {
        let dl = delta.and_then(|dl| dl.iter().find(|(n, _, _)| *n == name));
        // Unknown protocols are counted on receipt only.
        let only_rx = name == "Unknown protocols";
        let tx = if only_rx { String::new() } else { num(tx) };
        let dtx = if only_rx { String::new() } else { change(dl.and_then(|d| d.2)) };
        let drx = change(dl.and_then(|d| d.1));
        // The change columns line up even where Sent is blank.
        let tx = if tx.is_empty() && delta.is_some() { " ".to_string() } else { tx };
        row(w, [name, &num(rx), &tx, &drx, &dtx])?;
    }
    Ok(())
}

fn percent(s: &Share, n: Option<i128>) -> String {
    match (n, s.fraction(n)) {
        (Some(n), Some(f)) => format!("{n} ({:.2}%)", f * 100.0),
        (Some(n), None) => n.to_string(),
        (None, _) => "-".into(),
    }
}

/// One line: the interval's packets each way and the errors and discards
/// among them.
fn share_line(e: &ErrorShare, w: &mut impl Write) -> io::Result<()> {
    let dir = |name: &str, s: &Option<Share>| {
        s.as_ref().map(|s| {
            let mut t = format!("{name} {}: errors {}", s.packets, percent(s, s.errors));
            if s.discards.is_some() {
                t.push_str(&format!(", discards {}", percent(s, s.discards)));
            }
            t
        })
    };
    let parts: Vec<String> = [dir("received", &e.received), dir("sent", &e.sent)].into_iter().flatten().collect();
    writeln!(w, "\n  (since last display: {})", parts.join("; "))
}

/// The totals block, exactly as netstat -e prints it; `per_interface` (-v)
/// adds a block per interface after it. `delta` (--delta, after the first
/// display): the totals' changes and error share.
pub fn write_interfaces(
    r: &InterfaceReport,
    per_interface: bool,
    delta: Option<(&DevRows, &ErrorShare)>,
    w: &mut impl Write,
) -> io::Result<()> {
    writeln!(w, "Interface Statistics\n")?;
    dev_block(&r.total, delta.map(|d| d.0), w)?;
    if let Some((_, share)) = delta {
        share_line(share, w)?;
    }
    if per_interface {
        for d in &r.interfaces {
            writeln!(w, "\nInterface {}\n", escape(&d.name))?;
            dev_block(d, None, w)?;
        }
    }
    Ok(())
}

fn mac_cells(mac: Option<&str>) -> String {
    match mac {
        Some(m) => m.split(':').map(|b| format!("{b} ")).collect(),
        None => ".".repeat(18),
    }
}

/// -4/-6 leave out the other family's table.
pub fn write_routes(r: &RouteReport, family: Family, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "{RULE}\nInterface List")?;
    for l in &r.interfaces {
        let idx = l.ifindex.map_or("?".to_string(), |i| i.to_string());
        let mac = mac_cells(l.mac.as_deref());
        let mac = escape(&mac);
        writeln!(w, "{idx:>3}...{mac}......{}", escape(&l.name))?;
    }
    writeln!(w, "{RULE}\n")?;

    if family.v4() {
        writeln!(w, "IPv4 Route Table\n{RULE}\nActive Routes:")?;
        writeln!(w, "Network Destination        Netmask          Gateway       Interface  Metric")?;
        for rt in &r.ipv4 {
            let mut l = String::new();
            rcell(&mut l, &rt.destination.to_string(), 17);
            rcell(&mut l, &rt.netmask.to_string(), 17);
            // route print's columns: 17, 17, 17, 17, 7 wide, right-aligned;
            // its "On-link " carries a trailing space, so it ends a column early.
            rcell(&mut l, &rt.gateway.map_or("On-link ".to_string(), |g| g.to_string()), 17);
            let iface = rt.interface_addr.map_or_else(|| escape(&rt.interface).into_owned(), |a| a.to_string());
            rcell(&mut l, &iface, 17);
            rcell(&mut l, &rt.metric.to_string(), 7);
            writeln!(w, "{l}")?;
        }
        if r.ipv4.is_empty() {
            writeln!(w, "  None")?;
        }
        writeln!(w, "{RULE}\n{NO_PERSISTENT_ROUTES}\n")?;
    }
    if family.v6() {
        writeln!(w, "IPv6 Route Table\n{RULE}\nActive Routes:")?;
        writeln!(w, " If Metric Network Destination      Gateway")?;
        for rt in &r.ipv6 {
            let ifx = r
                .interfaces
                .iter()
                .find(|l| l.name == rt.interface)
                .and_then(|l| l.ifindex)
                .map_or_else(|| escape(&rt.interface).into_owned(), |i| i.to_string());
            let mut l = String::new();
            rcell(&mut l, &ifx, 3);
            rcell(&mut l, &rt.metric.to_string(), 7);
            l.push(' ');
            let dest = format!("{}/{}", rt.destination, rt.prefix_len);
            if dest.len() < 25 {
                cell(&mut l, &dest, 25);
            } else {
                // Windows wraps a destination too long for its column and
                // puts the gateway under the Gateway heading.
                l.push_str(&dest);
                l.push('\n');
                l.push_str(&" ".repeat(36));
            }
            l.push_str(&rt.gateway.map_or("On-link".to_string(), |g| g.to_string()));
            writeln!(w, "{l}")?;
        }
        if r.ipv6.is_empty() {
            writeln!(w, "  None")?;
        }
        writeln!(w, "{RULE}\n{NO_PERSISTENT_ROUTES}")?;
    }
    Ok(())
}

/// Where netstat puts the `=`: column 38 in the IP sections, 39 in TCP's,
/// 25 in UDP's (the name cell is two columns less, after the indent).
fn name_width(title: &str) -> usize {
    if title.starts_with("TCP ") {
        36
    } else if title.starts_with("UDP ") {
        22
    } else {
        35
    }
}

/// `delta` (--delta, after the first display): each counter's change
/// beside it, and a line with the interval's error share per section.
pub fn write_statistics(sections: &[Section], delta: Option<(&[Section], &[ErrorShare])>, w: &mut impl Write) -> io::Result<()> {
    for s in sections {
        writeln!(w, "\n{}\n", s.title)?;
        let d = delta.and_then(|(d, _)| d.iter().find(|d| d.title == s.title)).map(|d| &d.rows);
        match &s.rows {
            Rows::Single(rows) => {
                let width = name_width(s.title);
                let vwidth = rows.iter().map(|(_, v)| v.to_string().len()).max().unwrap_or(0);
                for (name, v) in rows {
                    let mut l = String::from("  ");
                    cell(&mut l, name, width);
                    match d {
                        None => writeln!(w, "{l}= {v}")?,
                        Some(Rows::Single(d)) => {
                            let c = d.iter().find(|(n, _)| n == name).map_or("-".to_string(), |(_, c)| signed(*c));
                            writeln!(w, "{l}= {v:<vwidth$}  {c}")?
                        }
                        Some(Rows::InOut(_)) => writeln!(w, "{l}= {v}")?,
                    }
                }
            }
            Rows::InOut(rows) if !rows.is_empty() => {
                // With --delta each cell holds the value and its change.
                let width = if d.is_some() { 20 } else { 12 };
                let line = |a: &str, b: &str, c: &str| {
                    let mut l = String::from("  ");
                    cell(&mut l, a, 26);
                    cell(&mut l, b, width);
                    l.push_str(c);
                    l.truncate(l.trim_end().len());
                    l
                };
                writeln!(w, "{}", line("", "Received", "Sent"))?;
                let num = |v: &Option<i128>| v.map_or("-".to_string(), |n| n.to_string());
                for (name, r, t) in rows {
                    let (r, t) = match d {
                        Some(Rows::InOut(d)) => {
                            let c = d.iter().find(|(n, _, _)| n == name);
                            let ch = |v: Option<i128>| v.map_or("-".to_string(), signed);
                            (
                                format!("{} {}", num(r), ch(c.and_then(|c| c.1))),
                                format!("{} {}", num(t), ch(c.and_then(|c| c.2))),
                            )
                        }
                        _ => (num(r), num(t)),
                    };
                    writeln!(w, "{}", line(name, &r, &t))?;
                }
            }
            Rows::InOut(_) => {}
        }
        if let Some(share) = delta.and_then(|(_, sh)| sh.iter().find(|e| e.section == s.title)) {
            share_line(share, w)?;
        }
        if let Some(n) = s.note {
            let gap = match &s.rows {
                Rows::Single(r) => !r.is_empty(),
                Rows::InOut(r) => !r.is_empty(),
            };
            writeln!(w, "{}  ({n})", if gap { "\n" } else { "" })?;
        }
    }
    Ok(())
}

/// JSON of the statistics sections. Serialized directly, not through
/// `serde_json::Value`, which cannot hold counters beyond u64.
pub struct StatisticsJson<'a>(pub &'a [Section]);

#[derive(Serialize)]
struct SectionJson<'a> {
    section: &'a str,
    counters: CountersJson<'a>,
    note: Option<&'a str>,
}

struct CountersJson<'a>(&'a Rows);

#[derive(Serialize)]
struct InOutJson {
    received: Option<i128>,
    sent: Option<i128>,
}

impl Serialize for CountersJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self.0 {
            Rows::Single(rows) => {
                for (name, v) in rows {
                    m.serialize_entry(name, v)?;
                }
            }
            Rows::InOut(rows) => {
                for (name, r, t) in rows {
                    m.serialize_entry(name, &InOutJson { received: *r, sent: *t })?;
                }
            }
        }
        m.end()
    }
}

impl Serialize for StatisticsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|sec| SectionJson { section: sec.title, counters: CountersJson(&sec.rows), note: sec.note }))
    }
}

/// The parts of an -e/-r/-s JSON document; absent parts are left out.
#[derive(Default)]
pub struct InfoDocument<'a> {
    pub interface_statistics: Option<InterfaceReport>,
    pub interfaces: Option<Vec<crate::sources::proc::links::Link>>,
    pub routes: Option<serde_json::Value>,
    pub statistics: Option<StatisticsJson<'a>>,
    /// --delta, after the first display.
    pub delta: Option<DeltaJson<'a>>,
    pub error_share: Option<Vec<ShareJson>>,
}

/// The counters' changes, in the shapes of `interface_statistics.total`'s
/// rows and of `statistics`.
pub struct DeltaJson<'a> {
    pub interface_statistics: Option<&'a DevRows>,
    pub statistics: Option<StatisticsJson<'a>>,
}

impl Serialize for DeltaJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(rows) = self.interface_statistics {
            let rows: Vec<(&str, Option<i128>, Option<i128>)> = rows.clone();
            m.serialize_entry("interface_statistics", &CountersJson(&Rows::InOut(rows)))?;
        }
        if let Some(st) = &self.statistics {
            m.serialize_entry("statistics", st)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
pub struct DirectionJson {
    packets: i128,
    errors: Option<i128>,
    discards: Option<i128>,
    /// errors / packets; null when no packet passed or no error counter exists.
    error_share: Option<f64>,
    discard_share: Option<f64>,
}

#[derive(Serialize)]
pub struct ShareJson {
    section: &'static str,
    received: Option<DirectionJson>,
    sent: Option<DirectionJson>,
}

impl From<&ErrorShare> for ShareJson {
    fn from(e: &ErrorShare) -> Self {
        let dir = |s: &Option<Share>| {
            s.as_ref().map(|s| DirectionJson {
                packets: s.packets,
                errors: s.errors,
                discards: s.discards,
                error_share: s.fraction(s.errors),
                discard_share: s.fraction(s.discards),
            })
        };
        ShareJson { section: e.section, received: dir(&e.received), sent: dir(&e.sent) }
    }
}

impl InfoDocument<'_> {
    pub fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut o = super::json::Obj::document(&mut buf);
        if let Some(v) = &self.interface_statistics {
            o.serde("interface_statistics", v);
        }
        if let Some(v) = &self.interfaces {
            o.serde("interfaces", v);
        }
        if let Some(v) = &self.routes {
            o.serde("routes", v);
        }
        if let Some(v) = &self.statistics {
            o.serde("statistics", v);
        }
        if let Some(v) = &self.delta {
            o.serde("delta", v);
        }
        if let Some(v) = &self.error_share {
            o.serde("error_share", v);
        }
        o.end();
        buf.push(b'\n');
        w.write_all(&buf)
    }
}

