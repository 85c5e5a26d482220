//! Text for -e (Interface Statistics), -r (Interface List and route tables)
//! and -s (protocol statistics) in netstat's layout, and their JSON forms.
use std::io::{self, Write};

use serde_json::{Map, Value, json};

use super::{cell, rcell};
use crate::{
    escape::escape,
    info::{InterfaceReport, RouteReport, Rows, Section},
    proc::dev::DevCounters,
};

const RULE: &str = "===========================================================================";
const SENT_NOTE: &str =
    "  (Linux does not count sent multicast or broadcast packets apart: Unicast packets sent include them)";

fn dev_block(d: &DevCounters, w: &mut impl Write) -> io::Result<()> {
    let row = |w: &mut dyn Write, name: &str, rx: String, tx: String| -> io::Result<()> {
        let mut l = String::new();
        cell(&mut l, name, 19);
        rcell(&mut l, &rx, 16);
        if !tx.is_empty() {
            rcell(&mut l, &tx, 16);
        }
        writeln!(w, "{l}")
    };
    row(w, "", "Received".into(), "Sent".into())?;
    writeln!(w)?;
    row(w, "Bytes", d.rx_bytes.to_string(), d.tx_bytes.to_string())?;
    row(w, "Unicast packets", d.rx_packets.saturating_sub(d.rx_multicast).to_string(), d.tx_packets.to_string())?;
    row(w, "Non-unicast packets", d.rx_multicast.to_string(), "-".into())?;
    row(w, "Discards", d.rx_dropped.to_string(), d.tx_dropped.to_string())?;
    row(w, "Errors", d.rx_errors.to_string(), d.tx_errors.to_string())?;
    row(w, "Unknown protocols", d.rx_nohandler.map_or("-".into(), |n| n.to_string()), String::new())?;
    Ok(())
}

pub fn write_interfaces(r: &InterfaceReport, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "Interface Statistics\n")?;
    dev_block(&r.total, w)?;
    for d in &r.interfaces {
        writeln!(w, "\nInterface {}\n", escape(&d.name))?;
        dev_block(d, w)?;
    }
    writeln!(w, "\n{SENT_NOTE}")?;
    Ok(())
}

fn mac_cells(mac: Option<&str>) -> String {
    match mac {
        Some(m) => m.split(':').map(|b| format!("{b} ")).collect(),
        None => ".".repeat(18),
    }
}

pub fn write_routes(r: &RouteReport, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "{RULE}\nInterface List")?;
    for l in &r.interfaces {
        let idx = l.ifindex.map_or("?".to_string(), |i| i.to_string());
        let mac = mac_cells(l.mac.as_deref());
        let mac = escape(&mac);
        writeln!(w, "{idx:>3}...{mac}......{}", escape(&l.name))?;
    }
    writeln!(w, "{RULE}\n")?;

    writeln!(w, "IPv4 Route Table\n{RULE}\nActive Routes:")?;
    writeln!(w, "Network Destination        Netmask          Gateway       Interface  Metric")?;
    for rt in &r.ipv4 {
        let mut l = String::new();
        rcell(&mut l, &rt.destination.to_string(), 17);
        rcell(&mut l, &rt.netmask.to_string(), 17);
        rcell(&mut l, &rt.gateway.map_or("On-link".to_string(), |g| g.to_string()), 17);
        rcell(&mut l, &escape(&rt.interface), 16);
        rcell(&mut l, &rt.metric.to_string(), 8);
        writeln!(w, "{l}")?;
    }
    if r.ipv4.is_empty() {
        writeln!(w, "  None")?;
    }
    writeln!(w, "{RULE}\n")?;

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
        cell(&mut l, &format!("{}/{}", rt.destination, rt.prefix_len), 25);
        l.push_str(&rt.gateway.map_or("On-link".to_string(), |g| g.to_string()));
        writeln!(w, "{l}")?;
    }
    if r.ipv6.is_empty() {
        writeln!(w, "  None")?;
    }
    writeln!(w, "{RULE}")?;
    Ok(())
}

pub fn write_statistics(sections: &[Section], w: &mut impl Write) -> io::Result<()> {
    for s in sections {
        writeln!(w, "\n{}\n", s.title)?;
        match &s.rows {
            Rows::Single(rows) => {
                for (name, v) in rows {
                    let mut l = String::from("  ");
                    cell(&mut l, name, 35);
                    writeln!(w, "{l}= {v}")?;
                }
            }
            Rows::InOut(rows) => {
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
        }
        if let Some(n) = s.note {
            writeln!(w, "\n  ({n})")?;
        }
    }
    Ok(())
}

pub fn statistics_json(sections: &[Section]) -> Value {
    let list: Vec<Value> = sections
        .iter()
        .map(|s| {
            let mut counters = Map::new();
            match &s.rows {
                Rows::Single(rows) => {
                    for (name, v) in rows {
                        counters.insert((*name).into(), json!(v));
                    }
                }
                Rows::InOut(rows) => {
                    for (name, r, t) in rows {
                        counters.insert((*name).into(), json!({"received": r, "sent": t}));
                    }
                }
            }
            json!({"section": s.title, "counters": counters, "note": s.note})
        })
        .collect();
    Value::Array(list)
}
