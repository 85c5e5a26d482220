//! `--pid N`: only that process's connections, in every mode. Snapshot
//! displays against the fixture tree (PID 100 holds two sockets there);
//! the live table and the stream (kernel tests) against this test process's
//! own sockets, with another process's traffic going on beside them.
//! vm: one backend (the filter is the tracer's consumer's, whichever hook saw the events)
mod fixture;
mod support;

use std::{
    net::{TcpListener, TcpStream, UdpSocket},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use support::*;

fn fixture(args: &[&str]) -> (String, String, i32) {
    fixture::run("basic", args)
}

/// Table rows (lines starting with a protocol) of a text display.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with("  TCP") || l.starts_with("  UDP"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn a_snapshot_display_lists_only_that_process() {
    let (all, _, code) = fixture(&["-ano"]);
    assert_eq!(code, 0);
    let (out, err, code) = fixture(&["-ano", "--pid", "100"]);
    assert_eq!(code, 0, "{err}");
    let ours: Vec<_> = rows(&all).into_iter().filter(|r| r.last().map(String::as_str) == Some("100")).collect();
    assert_eq!(ours.len(), 2, "the fixture changed: {all}");
    assert_eq!(rows(&out), ours, "{out}");
    // Without -o the rows are the same, just without the PID column.
    let (plain, _, _) = fixture(&["-an", "--pid", "100"]);
    assert_eq!(rows(&plain).len(), 2, "{plain}");
    // JSON too; a PID that holds nothing gives the header alone.
    let (json, _, _) = fixture(&["-an", "--pid", "100", "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{json}");
    assert!(conns.iter().all(|c| c["pid"] == 100), "{json}");
    let (none, _, code) = fixture(&["-ano", "--pid", "4000000"]);
    assert_eq!(code, 0);
    assert!(rows(&none).is_empty() && none.contains("Active Connections"), "{none}");
}

#[test]
fn pid_is_refused_where_it_means_nothing() {
    for args in [&["-s", "--pid", "1"][..], &["-r", "--pid", "1"], &["-e", "--pid", "1"], &["--probe-report", "--pid", "1"], &["--pid", "x"]] {
        let o = Command::new(netstat_bin()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("--pid"), "{args:?}: {err}");
    }
}

/// Traffic of another process (netstat-load), which --pid must leave out.
fn other_traffic() -> Vec<u32> {
    let out = load(&["pair", "--server-name", &name("psrv"), "--client-name", &name("pcli"), "--addr", "127.0.0.1", "--count", "3"]);
    out.iter().filter(|v| v.get("role").is_some()).map(pid_of).collect()
}

#[test]
fn the_stream_shows_only_that_process_s_events() {
    let me = std::process::id();
    let stream = Lines::spawn({
        let mut c = Command::new(netstat_bin());
        c.args(["--stream", "--json", "--backend", &backend(), "--pid", &me.to_string()]);
        c
    });
    let port_of_line = |l: &str| serde_json::from_str::<Value>(l).ok().and_then(|v| v["local"]["port"].as_u64());
    // Attaching takes a moment (tens of seconds in a loaded VM, like
    // Stream::wait_ready): bind until one of ours shows.
    let mut ready = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port() as u64;
        drop(s);
        if stream.wait_for(Duration::from_millis(100), |ls| ls.iter().any(|l| port_of_line(l) == Some(port))) {
            ready = true;
            break;
        }
    }
    assert!(ready, "no event of this process within 60 s: {:?}", stream.lines());
    let others = other_traffic();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port() as u64;
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop((client, server));
    let others_after = other_traffic();
    assert!(stream.wait_for(Duration::from_secs(10), |ls| ls.iter().filter(|l| l.contains(&format!("\"port\":{port}"))).count() >= 3), "our TCP events never showed");
    let lines = stream.stop();
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &Value| v.get("type").is_some()).collect();
    assert!(events.len() >= 4, "{lines:?}");
    for e in &events {
        assert_eq!(e["pid"], me, "an event of another process: {e}\n(others: {others:?} {others_after:?})");
    }
}

#[test]
fn the_live_table_shows_only_that_process_s_connections() {
    let me = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let table = Lines::spawn({
        let mut c = Command::new(netstat_bin());
        c.args(["-ano", "--json", "--pid", &me.to_string(), "1"]);
        c
    });
    let displays = |ls: &[String]| -> Vec<Value> {
        ls.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v.get("connections").is_some()).collect()
    };
    assert!(table.wait_for(Duration::from_secs(60), |l| !displays(l).is_empty()), "no first display");
    // Opened and closed between two displays, and one kept open.
    let kept = TcpStream::connect(addr).unwrap();
    let (kept_srv, _) = listener.accept().unwrap();
    let short = TcpStream::connect(addr).unwrap();
    let short_port = short.local_addr().unwrap().port();
    let (short_srv, _) = listener.accept().unwrap();
    drop((short, short_srv));
    let others = other_traffic();
    let n = displays(&table.lines()).len();
    assert!(table.wait_for(Duration::from_secs(20), |l| displays(l).len() >= n + 2), "displays stopped");
    let all = displays(&table.stop());
    let last = all.last().unwrap();
    let kept_port = kept.local_addr().unwrap().port();
    let conns = last["connections"].as_array().unwrap();
    let listed = |rows: &[Value], port: u16| rows.iter().any(|c| c["local"]["port"] == port || c["remote"]["port"] == port);
    assert!(listed(conns, addr.port()) && listed(conns, kept_port), "our listener and connection are missing: {last}");
    let closed: Vec<Value> = all.iter().flat_map(|d| d["closed"].as_array().unwrap().clone()).collect();
    assert!(listed(&closed, short_port), "the short connection was not listed as closed: {closed:?}");
    for row in all.iter().flat_map(|d| d["connections"].as_array().unwrap().iter().chain(d["closed"].as_array().unwrap())) {
        assert_eq!(row["pid"], me, "a row of another process (others: {others:?}): {row}");
    }
    drop((kept, kept_srv));
}
