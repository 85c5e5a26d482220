//! Text for -e (Interface Statistics), -r (Interface List and route tables)
//! and -s (protocol statistics) in netstat's layout, and their JSON forms.
use std::io::{self, Write};

use serde::{Serialize, Serializer, ser::SerializeMap};

use super::{cell, rcell};
use crate::{
    cli::config::Family,
    escape::escape,
    sources::info::{InterfaceReport, RouteReport, Rows, Section},
    sources::proc::dev::DevCounters,
};

/// Linux has no routes kept apart to be restored at boot (`route -p`):
/// every route is active or absent, so the section is always empty.
const NO_PERSISTENT_ROUTES: &str = "Persistent Routes:\n  None";
const RULE: &str = "===========================================================================";

fn dev_block(d: &DevCounters, w: &mut impl Write) -> io::Result<()> {
    let row = |w: &mut dyn Write, name: &str, rx: String, tx: String| -> io::Result<()> {
        // Numbers right-aligned to fixed column ends (35, 51), as netstat does.
        let mut l = name.to_string();
        let end = 35usize.saturating_sub(l.chars().count());
        rcell(&mut l, &rx, end);
        if !tx.is_empty() {
            let end = 51usize.saturating_sub(l.chars().count());
            rcell(&mut l, &tx, end);
        }
        writeln!(w, "{l}")
    };
    row(w, "", "Received".into(), "Sent".into())?;
    writeln!(w)?;
    row(w, "Bytes", d.rx_bytes.to_string(), d.tx_bytes.to_string())?;
    // Without a sent multicast count (a single interface), every packet
    // sent counts as unicast and the non-unicast cell says it is unknown.
    let tx_unicast = d.tx_packets.saturating_sub(d.tx_nonunicast.unwrap_or(0));
    row(w, "Unicast packets", d.rx_packets.saturating_sub(d.rx_multicast).to_string(), tx_unicast.to_string())?;
    row(w, "Non-unicast packets", d.rx_multicast.to_string(), d.tx_nonunicast.map_or("-".into(), |n| n.to_string()))?;
    row(w, "Discards", d.rx_dropped.to_string(), d.tx_dropped.to_string())?;
    row(w, "Errors", d.rx_errors.to_string(), d.tx_errors.to_string())?;
    row(w, "Unknown protocols", d.rx_nohandler.map_or("-".into(), |n| n.to_string()), String::new())?;
    Ok(())
}

/// The totals block, exactly as netstat -e prints it; `per_interface` (-v)
/// adds a block per interface after it.
pub fn write_interfaces(r: &InterfaceReport, per_interface: bool, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "Interface Statistics\n")?;
    dev_block(&r.total, w)?;
    if per_interface {
        for d in &r.interfaces {
            writeln!(w, "\nInterface {}\n", escape(&d.name))?;
            dev_block(d, w)?;
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

pub fn write_statistics(sections: &[Section], w: &mut impl Write) -> io::Result<()> {
    for s in sections {
        writeln!(w, "\n{}\n", s.title)?;
        match &s.rows {
            Rows::Single(rows) => {
                let width = name_width(s.title);
                for (name, v) in rows {
                    let mut l = String::from("  ");
                    cell(&mut l, name, width);
                    writeln!(w, "{l}= {v}")?;
                }
            }
            Rows::InOut(rows) if !rows.is_empty() => {
                let line = |a: &str, b: &str, c: &str| {
                    let mut l = String::from("  ");
                    cell(&mut l, a, 26);
                    cell(&mut l, b, 12);
                    l.push_str(c);
                    l.truncate(l.trim_end().len());
                    l
                };
                writeln!(w, "{}", line("", "Received", "Sent"))?;
                let num = |v: &Option<i128>| v.map_or("-".to_string(), |n| n.to_string());
                for (name, r, s) in rows {
                    writeln!(w, "{}", line(name, &num(r), &num(s)))?;
                }
            }
            Rows::InOut(_) => {}
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
        o.end();
        buf.push(b'\n');
        w.write_all(&buf)
    }
}

