//! Every mode's real JSON output validates against the one schema
//! (schema/netstat.schema.json), and the schema is strict enough to tell:
//! the old dialects, unknown fields and unescaped control characters fail.
//! The stream's lines are also checked in every kernel test (tests/support
//! validates each line it reads).
//! vm: one backend (validates documents; each backend's events are held against the tracepoint path's by tracer_backends)
mod fixture;
mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use support::*;

fn fixture_run(args: &[&str]) -> Value {
    one_document(fixture::ok("basic", args).as_bytes(), args)
}

fn one_document(stdout: &[u8], args: &[&str]) -> Value {
    let text = String::from_utf8(stdout.to_vec()).unwrap();
    assert_eq!(text.lines().count(), 1, "netstat {args:?} should print one JSON line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("netstat {args:?}: {e}: {text}"))
}

fn live_run(args: &[&str]) -> Value {
    let out = Command::new(netstat_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "netstat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    one_document(&out.stdout, args)
}

/// Three IPv4 connections, client and server both named `comm`.
fn pair(comm: &str) {
    load(&["pair", "--server-name", comm, "--client-name", comm, "--addr", "127.0.0.1", "--count", "3"]);
}

#[test]
fn snapshot_and_report_documents_validate() {
    for (args, def) in [
        (&["-anob", "--json"][..], "connections_document"),
        (&["-a", "--json"][..], "connections_document"),
        (&["-a", "-p", "udp", "--json"][..], "connections_document"),
        (&["-s", "--json"][..], "info_document"),
        (&["-e", "--json"][..], "info_document"),
        (&["-r", "--json"][..], "info_document"),
        (&["-e", "-s", "-r", "--json"][..], "info_document"),
    ] {
        let doc = fixture_run(args);
        schema::check(&doc, def);
        schema::check(&doc, "");
    }
    // The fixture's hostile process name stays escaped, and is still text.
    let doc = fixture_run(&["-anob", "--json"]);
    let comms: Vec<&str> = doc["connections"].as_array().unwrap().iter().filter_map(|c| c["comm"].as_str()).collect();
    assert!(comms.iter().any(|c| c.contains("\\x1b")), "{comms:?}");
}

#[test]
fn live_system_documents_validate() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    // Without -n: endpoints carry resolved names.
    let doc = live_run(&["-a", "-o", "--json"]);
    schema::check(&doc, "connections_document");
    let me = doc["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| ep(&c["local"]) == l.local_addr().unwrap().to_string() && c["state"] == "LISTENING")
        .unwrap_or_else(|| panic!("our listener is missing: {doc}"));
    assert!(me["local"]["name"].is_string(), "{me}");
    assert_eq!(me["pid"], std::process::id());
    assert!(me["cookie"].as_u64().is_some_and(|c| c > 0), "{me}");
    assert!(me["pid_start"].is_u64(), "{me}");
    let doc = live_run(&["--probe-report", "--json"]);
    schema::check(&doc, "probe_report");
    assert!(doc["hooks"].as_array().unwrap().iter().any(|h| h["hook"] == "tcp_state" && h["status"] == "attached"), "{doc}");
}

#[test]
fn live_table_documents_validate() {
    let mut cmd = Command::new(netstat_bin());
    cmd.args(["-ano", "1", "--json"]).stderr(Stdio::null());
    let lines = Lines::spawn(cmd);
    assert!(lines.wait_for(Duration::from_secs(60), |l| !l.is_empty()), "no first display");
    // Connections that open and close between two displays.
    let comm = name("schlive");
    pair(&comm);
    assert!(lines.wait_for(Duration::from_secs(10), |l| l.len() >= 3), "no third display");
    let docs: Vec<Value> = lines.stop().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    for d in &docs {
        schema::check(d, "live_document");
    }
    let closed: Vec<&Value> = docs.iter().flat_map(|d| d["closed"].as_array().unwrap()).collect();
    assert!(closed.iter().any(|c| c["comm"] == comm.as_str()), "no closed row of {comm}: {closed:?}");
}

#[test]
fn stream_lines_validate() {
    // Stream validates every line it reads (support::Stream).
    let stream = Stream::start(&[]);
    let comm = name("schstrm");
    pair(&comm);
    load(&["udp", "--name", &comm, "--sendto", "127.0.0.1:9"]);
    assert!(stream.wait_for(Duration::from_secs(5), |ev| ev.iter().any(|e| e["comm"] == comm.as_str() && e["type"] == "udp_close")));
    let events = stream.stop();
    let ours: Vec<&Value> = events.iter().filter(|e| e["comm"] == comm.as_str()).collect();
    for t in ["tcp_state", "udp_bind", "udp_close"] {
        assert!(ours.iter().any(|e| e["type"] == t), "no {t} event: {ours:?}");
    }
    for e in &ours {
        schema::check(e, "event");
    }
}

/// The schema is not vacuous: the old dialects and malformed values fail.
#[test]
fn schema_rejects_what_is_not_schema_1() {
    let event = json!({
        "schema": 1, "time": "2026-12-01T10:00:00.000000001Z", "type": "tcp_state",
        "proto": "tcp", "family": "ipv4",
        "local": {"addr": "127.0.0.1", "port": 80}, "remote": {"addr": "127.0.0.1", "port": 5000},
        "netns": 4026531840u64, "cookie": 4242, "old_state": "SYN_SENT", "new_state": "ESTABLISHED",
        "uid": 0, "pid": 10, "tid": 10, "comm": "curl", "owner_source": "current"
    });
    schema::check(&event, "event");
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = event.clone();
        f(&mut v);
        v
    };
    for (why, v) in [
        ("old string endpoint", broken(&|v| v["local"] = json!("127.0.0.1:80"))),
        ("old owner field", broken(&|v| { let s = v.as_object_mut().unwrap().remove("owner_source").unwrap(); v["owner"] = s; })),
        ("no schema", broken(&|v| { v.as_object_mut().unwrap().remove("schema"); })),
        ("schema 2", broken(&|v| v["schema"] = json!(2))),
        ("unknown field", broken(&|v| v["sock"] = json!("ffff8881"))),
        ("control character", broken(&|v| v["comm"] = json!("evil\u{1b}[31m"))),
        ("state name", broken(&|v| v["new_state"] = json!("established"))),
        ("tcp_state without states", broken(&|v| { v.as_object_mut().unwrap().remove("old_state"); })),
        ("time without nanoseconds", broken(&|v| v["time"] = json!("2026-12-01T10:00:00Z"))),
    ] {
        assert!(!schema::errors(&v, "event").is_empty(), "{why}: accepted {v}");
        assert!(!schema::errors(&v, "").is_empty(), "{why}: accepted as some document: {v}");
    }
    // The snapshot's old dialect.
    let old = json!({"connections": [{"proto": "TCP", "family": "IPv4", "local_address": "127.0.0.1", "local_port": 22}]});
    assert!(!schema::errors(&old, "").is_empty());
}
