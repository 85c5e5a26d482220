//! The connection list: which sockets a display shows (-a, --listening, -p,
//! -4/-6), in what order, and how each row reads (netstat's columns, -o PID,
//! -t offload state, -b executable line) or its JSON object.
use std::{
    fmt::Write as _,
    io::{self, Write},
    net::{IpAddr, SocketAddr},
};

use super::{cell, json};
use crate::{
    cli::config::Config,
    escape::{escape, escape_bytes},
    model::{Comm, Connection, Owner, Proto, tcp_state_name},
    sources::{netns::Labels, resolve::Resolver},
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
pub fn select<'a>(conns: impl IntoIterator<Item = &'a Connection>, cfg: &Config) -> Vec<&'a Connection> {
    let mut rows: Vec<&Connection> = conns.into_iter().filter(|c| wanted(c, cfg)).collect();
    // Rows equal in every key field are the same socket's: no order to keep.
    rows.sort_unstable_by_key(|c| c.sort_key());
    rows
}

/// Write one connection display, text or JSON (one line). `labels`
/// (--all-namespaces) adds the Namespace column.
pub fn write<'a>(conns: impl IntoIterator<Item = &'a Connection>, cfg: &Config, names: Option<&Resolver>, labels: Option<&Labels>, w: &mut impl Write) -> io::Result<()> {
    let rows = select(conns, cfg);
    if let Some(r) = names {
        // The text resolves only foreign addresses; JSON names both ends.
        let local = cfg.json.then_some(());
        r.prepare(rows.iter().flat_map(|c| [local.map(|_| c.local.ip()), Some(c.remote.ip())]).flatten());
    }
    if cfg.json {
        write_json(&rows, cfg, names, w)
    } else {
        write_text(&rows, cfg, names, labels, w)
    }
}

fn header(cfg: &Config, labels: Option<&Labels>) -> String {
    let mut h = String::from("  ");
    cell(&mut h, "Proto", 7);
    cell(&mut h, "Local Address", 23);
    cell(&mut h, "Foreign Address", 23);
    cell(&mut h, "State", 16);
    if cfg.owner {
        cell(&mut h, "PID", 9);
    }
    if cfg.offload {
        cell(&mut h, "Offload State", 16);
    }
    if labels.is_some() {
        h.push_str("Namespace");
    }
    h.truncate(h.trim_end().len());
    h
}

/// The trailing Namespace cell (--all-namespaces): after Windows' columns,
/// at the header's column `at` (at least two spaces after the row), so
/// their parsers still read the row.
pub fn namespace_cell(line: &mut String, c: &Connection, labels: &Labels, at: usize) {
    let n = line.chars().count();
    line.extend(std::iter::repeat_n(' ', at.saturating_sub(n).max(2)));
    line.push_str(&escape(&labels.of(c.id.netns)));
}

/// `s` left-aligned in `width`; a longer `s` is kept whole (the separator
/// after it keeps the fields apart).
pub(crate) fn field(out: &mut String, s: &str, width: usize) {
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(s.chars().count())));
}

/// One row as Windows writes it (its message table's
/// `"  %1!-5s!  %2!-21s!  %3!-21s!  %4!s!"`, with -o `%4!-12s!    %5!u!`,
/// with -t `%4!-12s!    %5!-12s!`, with both `... %5!u!\t%6!-12s!`):
/// two spaces between fields however long an address is, the PID always a
/// number (0: no process holds the socket, or its holder cannot be seen),
/// and trailing padding where Windows pads.
pub fn row_text(line: &mut String, proto: &str, local: &str, foreign: &str, state: &str, pid: Option<u32>, offload: Option<&str>) {
    line.push_str("  ");
    field(line, proto, 5);
    line.push_str("  ");
    field(line, local, 21);
    line.push_str("  ");
    field(line, foreign, 21);
    line.push_str("  ");
    if pid.is_none() && offload.is_none() {
        line.push_str(state);
        return;
    }
    field(line, state, 12);
    line.push_str("    ");
    match (pid, offload) {
        (Some(pid), Some(off)) => {
            let _ = write!(line, "{pid}\t");
            field(line, off, 12);
        }
        (Some(pid), None) => {
            let _ = write!(line, "{pid}");
        }
        (None, Some(off)) => field(line, off, 12),
        (None, None) => {}
    }
}

/// The -o cell: the holder's PID, 0 when there is none to name.
pub fn pid_cell(c: &Connection) -> u32 {
    c.owner.as_ref().map_or(0, |o| o.pid)
}

pub fn write_text(rows: &[&Connection], cfg: &Config, names: Option<&Resolver>, labels: Option<&Labels>, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "\nActive Connections\n")?;
    let head = header(cfg, labels);
    writeln!(w, "{head}")?;
    let ns_at = head.find("Namespace").unwrap_or(0);
    if cfg.offload {
        writeln!(w)?;
    }
    let mut line = String::with_capacity(128);
    let (mut local, mut foreign) = (String::with_capacity(48), String::with_capacity(48));
    for c in rows {
        line.clear();
        foreign_into(&mut foreign, c, names, cfg.fqdn);
        local.clear();
        let _ = write!(local, "{}", c.local);
        // Windows leaves the state and offload state of a UDP row empty.
        let offload = cfg.offload.then(|| if c.proto == Proto::Udp { "" } else { offload_state(c) });
        row_text(
            &mut line,
            c.proto.name(),
            &local,
            &foreign,
            c.state.map(tcp_state_name).unwrap_or(""),
            cfg.owner.then(|| pid_cell(c)),
            offload,
        );
        if let Some(l) = labels {
            namespace_cell(&mut line, c, l, ns_at);
        }
        line.push('\n');
        if cfg.executable {
            owner_line(&mut line, c, cfg.verbose);
        }
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// The -b line under a row: ` [name]`; `Can not obtain ownership
/// information` when a process holds the socket but cannot be named (another
/// PID namespace, no privilege to read its /proc entry); nothing when no
/// process holds it (TIME_WAIT, an orphaned FIN_WAIT_2: inode 0), as Windows
/// prints nothing under its PID 0 rows.
pub fn owner_line(line: &mut String, c: &Connection, verbose: bool) {
    match executable(c, verbose) {
        Some(name) => {
            if let Some(o) = &c.owner {
                service_line(line, o);
                if verbose {
                    lineage_line(line, o);
                }
            }
            line.push_str(" [");
            line.push_str(&name);
            line.push_str("]\n");
        }
        None if c.owner.is_none() && c.inode == 0 => {}
        None => {
            line.push_str(NO_OWNER);
            line.push('\n');
        }
    }
}

/// The line Windows prints above ` [svchost.exe]` for a service
/// (`  RpcSs`): the holder's container as `RUNTIME:ID12`, else its systemd
/// unit; `  cgroup:ID` for a cgroup that was gone before it was resolved;
/// nothing for the root cgroup, a path with neither, or a cgroup not
/// resolved yet.
pub fn service_line(line: &mut String, o: &Owner) {
    let Some(cg) = o.cgroup.as_deref() else { return };
    let text = match (&cg.container, &cg.unit) {
        (Some(c), _) => c.short(),
        (None, Some(u)) => escape(u).into_owned(),
        (None, None) if cg.gone => format!("cgroup:{}", cg.id),
        (None, None) => return,
    };
    line.push_str("  ");
    line.push_str(&text);
    line.push('\n');
}

/// -b -v: `  [nginx] <- [systemd]`, the holder and its ancestors up to the
/// first one outside its unit or container (from /proc while they live,
/// else the parent the kernel captured). Above ` [exe]`, two spaces in, as
/// Windows lists a row's components there: the bracketed executable stays
/// each row's last line for the parsers that look for it.
pub fn lineage_line(line: &mut String, o: &Owner) {
    let chain: Vec<&Comm> = match &o.ancestors {
        Some(a) => a.iter().map(|p| &p.comm).collect(),
        None => o.parent.iter().map(|p| &p.comm).collect(),
    };
    if chain.is_empty() {
        return;
    }
    line.push_str("  [");
    line.push_str(&escape_bytes(o.comm.as_bytes()));
    line.push(']');
    for c in chain {
        line.push_str(" <- [");
        line.push_str(&escape_bytes(c.as_bytes()));
        line.push(']');
    }
    line.push('\n');
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

/// The Foreign Address cell: `*:*` for a UDP endpoint; with names, a
/// listener's is this machine's name and port 0 (`HOSTNAME:0`), as Windows
/// shows it. The local address stays numeric, names or not: Windows resolves
/// only the foreign side, so `netstat -a | grep :5432` finds the listener.
pub fn foreign_text(c: &Connection, names: Option<&Resolver>, fqdn: bool) -> String {
    if c.is_unconnected_udp() {
        return "*:*".to_string();
    }
    if let Some(h) = names.filter(|_| c.is_listener()).and_then(|r| r.hostname.as_deref()) {
        let h = if fqdn { h } else { h.split('.').next().filter(|s| !s.is_empty()).unwrap_or(h) };
        return format!("{}:0", escape(h));
    }
    endpoint(c.remote, c.proto, names, true, fqdn)
}

/// `foreign_text` into `out` (cleared first), for a loop over many rows: a
/// numeric address allocates nothing.
fn foreign_into(out: &mut String, c: &Connection, names: Option<&Resolver>, fqdn: bool) {
    out.clear();
    if names.is_none() && !c.is_unconnected_udp() {
        let _ = write!(out, "{}", c.remote);
        return;
    }
    out.push_str(&foreign_text(c, names, fqdn));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows from real Windows captures (tests/fixtures/windows/), rebuilt
    /// field by field: the bytes match, trailing padding and TAB included.
    #[test]
    fn rows_match_windows_byte_for_byte() {
        let cases: [(&str, [&str; 4], Option<u32>, Option<&str>); 7] = [
            // jc-win10-netstat-an.out
            ("  TCP    0.0.0.0:135            0.0.0.0:0              LISTENING", ["TCP", "0.0.0.0:135", "0.0.0.0:0", "LISTENING"], None, None),
            ("  UDP    0.0.0.0:53             *:*                    ", ["UDP", "0.0.0.0:53", "*:*", ""], None, None),
            // jc-win10-netstat-aon.out: a 22+ character address keeps two spaces
            (
                "  UDP    [fe80::f5d1:8bf7:c410:e325%64]:52284  *:*                                    8844",
                ["UDP", "[fe80::f5d1:8bf7:c410:e325%64]:52284", "*:*", ""],
                Some(8844),
                None,
            ),
            (
                "  TCP    0.0.0.0:135            0.0.0.0:0              LISTENING       1712",
                ["TCP", "0.0.0.0:135", "0.0.0.0:0", "LISTENING"],
                Some(1712),
                None,
            ),
            // winsrv2019-netstat-oat.htb-flight.txt
            (
                "  TCP    0.0.0.0:80             g0:0                   LISTENING       4752\tInHost      ",
                ["TCP", "0.0.0.0:80", "g0:0", "LISTENING"],
                Some(4752),
                Some("InHost"),
            ),
            // win7-netstat-nat.htb-chatterbox.txt
            (
                "  TCP    10.10.10.74:49157      10.10.14.27:443        ESTABLISHED     InHost      ",
                ["TCP", "10.10.10.74:49157", "10.10.14.27:443", "ESTABLISHED"],
                None,
                Some("InHost"),
            ),
            (
                "  UDP    0.0.0.0:123            *:*                                                ",
                ["UDP", "0.0.0.0:123", "*:*", ""],
                None,
                Some(""),
            ),
        ];
        for (want, [proto, local, foreign, state], pid, offload) in cases {
            let mut line = String::new();
            row_text(&mut line, proto, local, foreign, state, pid, offload);
            assert_eq!(line, want);
        }
    }

    fn conn(inode: u64, owner: Option<crate::model::Owner>) -> Connection {
        Connection {
            proto: Proto::Tcp,
            ipv6: false,
            local: "10.0.0.5:43211".parse().unwrap(),
            remote: "198.51.100.7:443".parse().unwrap(),
            state: Some(netstat_common::tcp_state::TIME_WAIT),
            id: Default::default(),
            inode,
            uid: None,
            offloaded: false,
            owner,
        }
    }

    #[test]
    fn service_line_names_container_unit_or_gone_cgroup() {
        use crate::model::{CgroupInfo, Container, Owner};
        let line = |cg: Option<CgroupInfo>| {
            let mut o = Owner::new(9, Comm::new(b"x"), crate::model::OwnerSource::Proc);
            o.cgroup = cg.map(std::sync::Arc::new);
            let mut s = String::new();
            service_line(&mut s, &o);
            s
        };
        let id = "3f1a9c3f1a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";
        let unit = |u: &str| Some(Box::<str>::from(u));
        let path = |p: &str| Some(Box::<[u8]>::from(p.as_bytes()));
        let cont = Container { runtime: "docker", id: id.into(), name: None, pod: None };
        assert_eq!(line(None), "");
        assert_eq!(line(Some(CgroupInfo { id: 1, path: path("/"), unit: None, container: None, gone: false, encoded: Default::default() })), "");
        assert_eq!(line(Some(CgroupInfo { id: 5, path: path("/system.slice/nginx.service"), unit: unit("nginx.service"), container: None, gone: false, encoded: Default::default() })), "  nginx.service\n");
        let scope = format!("docker-{id}.scope");
        assert_eq!(
            line(Some(CgroupInfo { id: 6, path: path(&format!("/system.slice/{scope}")), unit: unit(&scope), container: Some(cont), gone: false, encoded: Default::default() })),
            "  docker:3f1a9c3f1a9c\n"
        );
        let gone = |g| CgroupInfo { id: 77, path: None, unit: None, container: None, gone: g, encoded: Default::default() };
        assert_eq!(line(Some(gone(true))), "  cgroup:77\n");
        assert_eq!(line(Some(gone(false))), "", "not resolved yet is not gone");
        assert_eq!(line(Some(CgroupInfo { id: 8, path: path("/x"), unit: unit("evil\x1b.service"), container: None, gone: false, encoded: Default::default() })), "  evil\\x1b.service\n");
    }

    /// -b -v's lineage line: escaped names, the captured parent when /proc
    /// gave no ancestors, the ancestors when it did.
    #[test]
    fn lineage_line_escapes_and_falls_back_to_the_parent() {
        use crate::model::{Owner, Process};
        let mut o = Owner::new(9, Comm::new(b"ng\x1b]0;x\x07"), crate::model::OwnerSource::Current);
        let mut s = String::new();
        lineage_line(&mut s, &o);
        assert_eq!(s, "", "no parent known: no line");
        o.parent = Some(Process { pid: 1, comm: Comm::new(b"sys\ntemd"), pid_start: None });
        lineage_line(&mut s, &o);
        assert_eq!(s, "  [ng\\x1b]0;x\\x07] <- [sys\\ntemd]\n");
        s.clear();
        let p = |pid, c: &[u8]| Process { pid, comm: Comm::new(c), pid_start: None };
        o.ancestors = Some(vec![p(5, b"sh"), p(1, b"init")].into());
        lineage_line(&mut s, &o);
        assert_eq!(s, "  [ng\\x1b]0;x\\x07] <- [sh] <- [init]\n");
    }

    #[test]
    fn owner_line_is_empty_only_where_no_process_holds_the_socket() {
        let line = |c: &Connection| {
            let mut s = String::new();
            owner_line(&mut s, c, false);
            s
        };
        assert_eq!(line(&conn(0, None)), "");
        assert_eq!(line(&conn(7, None)), " Can not obtain ownership information\n");
        let o = crate::model::Owner::new(9, crate::model::Comm::new(b"curl"), crate::model::OwnerSource::Proc);
        assert_eq!(line(&conn(7, Some(o))), " [curl]\n");
        assert_eq!((pid_cell(&conn(0, None)), pid_cell(&conn(7, None))), (0, 0));
    }
}
