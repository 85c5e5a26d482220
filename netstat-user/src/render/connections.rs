//! The connection list: which sockets a display shows (-a, --listening, -p,
//! -4/-6), in what order, and how each row reads (netstat's columns, -o PID,
//! -t offload state, -b executable line) or its JSON object.
use std::{
    io::{self, Write},
    net::{IpAddr, SocketAddr},
};

use super::{cell, json};
use crate::{
    cli::config::Config,
    escape::{escape, escape_bytes},
    model::{Connection, Proto, tcp_state_name},
    sources::resolve::Resolver,
};

const NO_OWNER: &str = " Can not obtain ownership information";

/// Does this display list `c`?
pub fn wanted(c: &Connection, cfg: &Config) -> bool {
    let proto_ok = match c.proto {
        Proto::Tcp => cfg.proto.tcp,
        Proto::Udp => cfg.proto.udp,
    };
    let family_ok = if c.ipv6 { cfg.family.v6() } else { cfg.family.v4() };
    if !proto_ok || !family_ok {
        return false;
    }
    let passive = c.is_listener() || c.is_unconnected_udp();
    if cfg.listening_only {
        return passive;
    }
    if cfg.all {
        return true;
    }
    // Without -a netstat lists active TCP connections only; a UDP socket with
    // a peer counts as active when UDP alone was asked for.
    match c.proto {
        Proto::Tcp => !passive,
        Proto::Udp => !cfg.proto.tcp && !passive,
    }
}

/// The rows of one display, filtered and in netstat's order.
pub fn select<'a>(conns: &'a [Connection], cfg: &Config) -> Vec<&'a Connection> {
    let mut rows: Vec<&Connection> = conns.iter().filter(|c| wanted(c, cfg)).collect();
    rows.sort_by_key(|c| c.sort_key());
    rows
}

/// Write one connection display, text or JSON (one line).
pub fn write(conns: &[Connection], cfg: &Config, names: Option<&Resolver>, w: &mut impl Write) -> io::Result<()> {
    let rows = select(conns, cfg);
    if let Some(r) = names {
        r.prepare(rows.iter().flat_map(|c| [c.local.ip(), c.remote.ip()]));
    }
    if cfg.json {
        write_json(&rows, cfg, names, w)
    } else {
        write_text(&rows, cfg, names, w)
    }
}

fn header(cfg: &Config) -> String {
    let mut h = String::from("  ");
    cell(&mut h, "Proto", 7);
    cell(&mut h, "Local Address", 23);
    cell(&mut h, "Foreign Address", 23);
    cell(&mut h, "State", 16);
    if cfg.owner {
        cell(&mut h, "PID", 9);
    }
    if cfg.offload {
        h.push_str("Offload State");
    }
    h.truncate(h.trim_end().len());
    h
}

pub fn write_text(rows: &[&Connection], cfg: &Config, names: Option<&Resolver>, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "\nActive Connections\n")?;
    writeln!(w, "{}", header(cfg))?;
    let mut line = String::with_capacity(128);
    for c in rows {
        line.clear();
        line.push_str("  ");
        cell(&mut line, c.proto.name(), 7);
        cell(&mut line, &endpoint(c.local, c.proto, names, false, cfg.fqdn), 23);
        let foreign = if c.proto == Proto::Udp && c.is_unconnected_udp() {
            "*:*".to_string()
        } else {
            endpoint(c.remote, c.proto, names, true, cfg.fqdn)
        };
        cell(&mut line, &foreign, 23);
        cell(&mut line, c.state.map(tcp_state_name).unwrap_or(""), 16);
        if cfg.owner {
            let pid = c.owner.as_ref().map(|o| o.pid.to_string()).unwrap_or_else(|| "-".into());
            cell(&mut line, &pid, 9);
        }
        if cfg.offload {
            line.push_str(offload_state(c));
        }
        line.truncate(line.trim_end().len());
        line.push('\n');
        if cfg.executable {
            match executable(c, cfg.verbose) {
                Some(name) => {
                    line.push_str(" [");
                    line.push_str(&name);
                    line.push_str("]\n");
                }
                None => {
                    line.push_str(NO_OWNER);
                    line.push('\n');
                }
            }
        }
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

fn offload_state(c: &Connection) -> &'static str {
    if c.offloaded { "Offloaded" } else { "InHost" }
}

/// What -b shows: the executable's file name (its full path with -v); the
/// process name when the executable cannot be read. Escaped for the terminal.
fn executable(c: &Connection, verbose: bool) -> Option<String> {
    let o = c.owner.as_ref()?;
    match &o.exe {
        Some(p) if verbose => Some(escape_bytes(p.as_os_str().as_encoded_bytes())),
        Some(p) => p.file_name().map(|f| escape_bytes(f.as_encoded_bytes())),
        None if !o.comm.is_empty() => Some(escape_bytes(o.comm.as_bytes())),
        None => None,
    }
}

/// An address as netstat prints it: `1.2.3.4:80`, `[::1]:22`, or with names
/// `host:http`. Wildcards and port 0 stay numeric.
pub fn endpoint(a: SocketAddr, proto: Proto, names: Option<&Resolver>, foreign: bool, fqdn: bool) -> String {
    let Some(r) = names else {
        return a.to_string();
    };
    let host = host_name(a.ip(), r, foreign && fqdn);
    let port = match (a.port(), r.service(a.port(), proto)) {
        (0, _) => "0".to_string(),
        (_, Some(s)) => escape(s).into_owned(),
        (p, None) => p.to_string(),
    };
    match host {
        Some(h) => format!("{h}:{port}"),
        None if a.is_ipv6() => format!("[{}]:{port}", a.ip()),
        None => format!("{}:{port}", a.ip()),
    }
}

/// A host's name, short (first label) unless `full`; None when it has none.
fn host_name(ip: IpAddr, r: &Resolver, full: bool) -> Option<String> {
    if ip.is_unspecified() {
        return None;
    }
    let name = r.host(ip)?;
    let name = if full || name.parse::<IpAddr>().is_ok() {
        name.as_str()
    } else {
        name.split('.').next().filter(|s| !s.is_empty()).unwrap_or(&name)
    };
    Some(escape(name).into_owned())
}

/// The resolved names of a row's ends, as the text table prints them.
fn names_of(c: &Connection, cfg: &Config, names: Option<&Resolver>) -> (Option<String>, Option<String>) {
    let Some(r) = names else { return (None, None) };
    let local = endpoint(c.local, c.proto, Some(r), false, cfg.fqdn);
    let remote = (!c.is_unconnected_udp()).then(|| endpoint(c.remote, c.proto, Some(r), true, cfg.fqdn));
    (Some(local), remote)
}

/// One connection row as JSON (schema `connection`).
pub fn json_row(buf: &mut Vec<u8>, c: &Connection, cfg: &Config, names: Option<&Resolver>) {
    let (l, r) = names_of(c, cfg, names);
    json::connection(buf, c, json::Names { local: l.as_deref(), remote: r.as_deref() });
}

/// One closed row as JSON (schema `closed_connection`).
pub fn json_closed(
    buf: &mut Vec<u8>,
    c: &crate::model::ClosedConnection,
    cfg: &Config,
    names: Option<&Resolver>,
    clock_offset_ns: i128,
) {
    let (l, r) = names_of(&c.conn, cfg, names);
    json::closed(buf, c, json::Names { local: l.as_deref(), remote: r.as_deref() }, clock_offset_ns);
}

fn write_json(rows: &[&Connection], cfg: &Config, names: Option<&Resolver>, w: &mut impl Write) -> io::Result<()> {
    let mut buf = Vec::with_capacity(256 * rows.len().min(4096) + 64);
    let mut o = json::Obj::document(&mut buf);
    json::array(&mut o, "connections", rows, |b, c| json_row(b, c, cfg, names));
    o.end();
    buf.push(b'\n');
    w.write_all(&buf)
}
