//! vm: host only (checks netstat-load's patterns against ss, no kernel of ours; owner_handoff runs netstat on them in the guests)
//! `netstat-load handoff`: each pattern really hands its sockets over. The
//! witness is `ss -tuanpe`, not netstat: once `all_held` is printed, every
//! reported socket (found by 4-tuple, and by cookie where ss prints it as
//! `sk:HEX`) must be in the holder's fd table and no longer in its creator's.
mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use serde_json::Value;

use support::ss::{SsSock, sockets as ss};

/// What one run printed, and what ss saw while everything was held.
struct Run {
    name: String,
    first: Value,
    conns: Vec<Value>,
    others: Vec<Value>,
    ss: Vec<SsSock>,
}

impl Run {
    fn pid(&self, role: &str) -> u64 {
        self.first["pids"][role].as_u64().unwrap_or_else(|| panic!("no pid for {role}: {}", self.first))
    }

    fn tcp(&self, local_port: u64, peer_port: u64) -> &SsSock {
        let (l, p) = (format!("127.0.0.1:{local_port}"), format!("127.0.0.1:{peer_port}"));
        let found: Vec<&SsSock> = self.ss.iter().filter(|s| s.proto == "tcp" && s.local == l && s.peer == p).collect();
        assert_eq!(found.len(), 1, "ss has {} sockets {l} <-> {p}: {found:?}", found.len());
        found[0]
    }

    fn listener(&self, cookie: u64) -> &SsSock {
        self.ss
            .iter()
            .find(|s| s.state == "LISTEN" && s.cookie == Some(cookie))
            .unwrap_or_else(|| panic!("ss shows no listener with cookie {cookie:x}"))
    }
}

fn run(pattern: &str, extra: &[&str]) -> Run {
    let name = support::name("ho");
    let mut args = vec!["handoff", "--pattern", pattern, "--name", &name, "--hold-ms", "1500", "--seconds", "10"];
    args.extend_from_slice(extra);
    let mut child = Command::new(support::load_bin()).args(&args).stdout(Stdio::piped()).spawn().expect("spawn netstat-load");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines: Vec<Value> = Vec::new();
    let mut ss_seen = None;
    let mut line = String::new();
    while out.read_line(&mut line).expect("read netstat-load") > 0 {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        line.clear();
        if v.get("all_held").is_some() {
            ss_seen = Some(ss());
        }
        lines.push(v);
    }
    let status = child.wait().expect("wait netstat-load");
    assert!(status.success(), "netstat-load {args:?}: {status}; printed {lines:?}");
    assert_eq!(lines.last().map(|v| v["done"] == true), Some(true), "no done line: {lines:?}");
    let first = lines[0].clone();
    assert_eq!(first["pattern"], pattern, "{first}");
    let conns: Vec<Value> = lines.iter().filter(|v| v.get("conn").is_some()).cloned().collect();
    assert_eq!(conns.len(), 4, "{lines:?}");
    let held = lines.iter().find(|v| v.get("all_held").is_some()).expect("all_held line");
    assert_eq!(held["all_held"], 4);
    let others = lines.iter().filter(|v| v.get("udp").is_some()).cloned().collect();
    Run { name, first, conns, others, ss: ss_seen.expect("ss ran") }
}

/// The checks every pattern shares: the handed-off end is held by
/// `holder_pid` (under the role name `holder_role`) and not by
/// `creator_pid`; the other end by its own process. Returns the handed-off
/// sockets.
fn check_holders<'a>(r: &'a Run, holder_role: &str) -> Vec<&'a SsSock> {
    let mut handed = Vec::new();
    for c in &r.conns {
        let (sp, cp) = (c["server_port"].as_u64().unwrap(), c["client_port"].as_u64().unwrap());
        let server = r.tcp(sp, cp);
        let client = r.tcp(cp, sp);
        for (sock, key) in [(server, "server_cookie"), (client, "client_cookie")] {
            if let Some(cookie) = c[key].as_u64() {
                assert_eq!(sock.cookie, Some(cookie), "{key} of {c} vs ss {sock:?}");
            }
        }
        let (held, other) = match c["side"].as_str() {
            Some("server") => (server, client),
            Some("client") => (client, server),
            s => panic!("bad side {s:?} in {c}"),
        };
        let other_pid = if c["side"] == "server" { &c["client_pid"] } else { &c["acceptor_pid"] };
        assert_eq!(other.pids(), BTreeSet::from([other_pid.as_u64().unwrap()]), "{c}: other end {other:?}");
        handed.push(held);
        if r.first["direct"] == true {
            continue;
        }
        let holder = c["holder_pid"].as_u64().unwrap();
        let creator = c["creator_pid"].as_u64().unwrap();
        assert_eq!(held.pids(), BTreeSet::from([holder]), "{c}: ss shows {held:?}");
        let expect = format!("{}-{holder_role}", r.name);
        assert!(held.users.iter().all(|u| u.0 == expect), "{c}: holder named {:?}, want {expect}", held.users);
        if creator != holder {
            assert!(!held.pids().contains(&creator), "{c}: creator still holds it: {held:?}");
        }
    }
    handed
}

#[test]
fn prefork_child_holds_what_the_master_accepted() {
    let r = run("prefork", &[]);
    check_holders(&r, "w");
    let master = r.pid("master");
    let holders: BTreeSet<u64> = r.conns.iter().map(|c| c["holder_pid"].as_u64().unwrap()).collect();
    assert_eq!(holders.len(), 4, "one child per connection: {:?}", r.conns);
    for c in &r.conns {
        assert_eq!(c["creator_pid"], master, "{c}");
        assert_eq!(c["acceptor_pid"], master, "{c}");
        assert_ne!(c["holder_pid"], master, "{c}");
    }
}

#[test]
fn pass_fd_worker_holds_what_the_acceptor_sent() {
    let r = run("pass-fd", &[]);
    check_holders(&r, "w");
    for c in &r.conns {
        assert_eq!(c["holder_pid"], r.pid("worker"), "{c}");
        assert_eq!(c["creator_pid"], r.pid("acceptor"), "{c}");
    }
}

#[test]
fn inherit_child_holds_the_client_end() {
    let r = run("inherit", &[]);
    check_holders(&r, "w");
    let client = r.pid("client");
    for c in &r.conns {
        assert_eq!(c["side"], "client", "{c}");
        assert_eq!(c["creator_pid"], client, "{c}");
        assert_ne!(c["holder_pid"], client, "{c}");
    }
}

#[test]
fn reuseport_listeners_serve_their_own() {
    let r = run("reuseport", &[]);
    check_holders(&r, "m");
    let listeners = r.first["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 3, "{}", r.first);
    for l in listeners {
        let sock = r.listener(l["cookie"].as_u64().unwrap());
        assert_eq!(sock.pids(), BTreeSet::from([l["pid"].as_u64().unwrap()]), "{l}: {sock:?}");
    }
    let pids: BTreeSet<u64> = listeners.iter().map(|l| l["pid"].as_u64().unwrap()).collect();
    for c in &r.conns {
        assert!(pids.contains(&c["acceptor_pid"].as_u64().unwrap()), "{c}");
        assert_eq!(c["holder_pid"], c["acceptor_pid"], "{c}");
        assert_eq!(c["listener_pid"], c["acceptor_pid"], "{c}");
    }
}

#[test]
fn workers_share_the_masters_listener() {
    let r = run("workers", &[]);
    check_holders(&r, "w");
    let master = r.pid("master");
    let workers: BTreeSet<u64> = r.first["pids"]["workers"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert_eq!(workers.len(), 2);
    let listen = r.first["listen"].as_str().unwrap();
    let l = r.ss.iter().find(|s| s.state == "LISTEN" && s.local == listen).expect("listener in ss");
    let mut all = workers.clone();
    all.insert(master);
    assert_eq!(l.pids(), all, "master and workers share the listener: {l:?}");
    for c in &r.conns {
        assert!(workers.contains(&c["acceptor_pid"].as_u64().unwrap()), "a worker accepts, never the master: {c}");
        assert_eq!(c["listener_pid"], master, "{c}");
    }
}

fn check_uring_udp(r: &Run) {
    let udp = &r.others.first().unwrap_or_else(|| panic!("no udp line: {:?}", r.conns))["udp"];
    let local = udp["local"].as_str().unwrap();
    let sock = r
        .ss
        .iter()
        .find(|s| s.proto == "udp" && s.local == local)
        .unwrap_or_else(|| panic!("ss shows no UDP socket {local}"));
    assert_eq!(sock.peer, udp["remote"].as_str().unwrap(), "connected by IORING_OP_CONNECT: {sock:?}");
    assert_eq!(sock.cookie, udp["cookie"].as_u64(), "{sock:?}");
    assert_eq!(sock.pids(), BTreeSet::from([r.pid("client")]), "{sock:?}");
}

/// io_uring may be switched off (kernel.io_uring_disabled, 6.6+): that
/// fails the test with a clear line, never a silent pass.
fn uring_enabled() -> bool {
    let off = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_default();
    assert!(matches!(off.trim(), "" | "0"), "io_uring is switched off here (kernel.io_uring_disabled = {}): the uring pattern cannot run", off.trim());
    true
}

#[test]
fn uring_accept_and_connect() {
    if !uring_enabled() {
        return;
    }
    let r = run("uring", &[]);
    check_holders(&r, "m");
    check_uring_udp(&r);
}

#[test]
fn uring_direct_socket_has_no_user() {
    if !uring_enabled() {
        return;
    }
    let r = run("uring", &["--direct"]);
    for sock in check_holders(&r, "m") {
        assert!(sock.users.is_empty(), "a fixed-file socket is in no fd table: {sock:?}");
    }
    for c in &r.conns {
        assert!(c["server_cookie"].is_null(), "{c}");
    }
    check_uring_udp(&r);
}
