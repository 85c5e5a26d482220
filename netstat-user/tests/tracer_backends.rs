//! Kernel tests: whichever backend produced them, the events are the same.
//! Two tracers watch one workload side by side, one with the backend under
//! test (NETSTAT_TEST_BACKEND; the VM matrix runs fentry and kprobe here) and
//! one forced to the tracepoint/cgroup path, and must report the same events.
mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;
use support::*;

/// Every field of an event but its timestamp (the forms fire a few
/// instructions apart inside the same kernel call) and the lifetime derived
/// from timestamps; whether a lifetime is there at all is compared.
///
/// `owner` is compared up to one distinction: the fexit and kretprobe forms
/// learn of an accept when `inet_csk_accept` returns, the tracepoint form
/// when the syscall exits, so a transition of the accepted socket in between
/// (the peer's FIN, say) has its owner remembered from the listener in one
/// (`listener`) and from the accept in the other (`captured`): the same
/// process either way, which `pid`, `tid` and `comm` still check.
fn comparable(e: &Value) -> String {
    let mut m = e.as_object().expect("event object").clone();
    m.remove("time");
    if let Some(d) = m.get_mut("duration_ns") {
        *d = Value::from("present");
    }
    if let Some(o) = m.get_mut("owner_source") {
        if *o == "listener" || *o == "captured" {
            *o = Value::from("remembered");
        }
    }
    Value::Object(m).to_string()
}

/// The events of `pids`, as a multiset of comparable strings.
fn multiset(events: &[Value], pids: &[u32]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events.iter().filter(|e| e["pid"].as_u64().is_some_and(|p| pids.contains(&(p as u32)))) {
        *m.entry(comparable(e)).or_insert(0) += 1;
    }
    m
}

fn lost(events: &[Value]) -> Vec<String> {
    events.iter().filter(|e| e["type"] == "lost").map(Value::to_string).collect()
}

struct Workload {
    pids: Vec<u32>,
    /// (local, remote) of every TCP connection, client side.
    conns: Vec<(String, String)>,
    udp_comms: Vec<String>,
}

fn run_workload() -> Workload {
    let mut w = Workload { pids: vec![], conns: vec![], udp_comms: vec![] };
    for (addr, tag, extra) in [("127.0.0.1", "4", None), ("::1", "6", None), ("127.0.0.1", "s", Some("--server-close-first"))] {
        let (srv, cli) = (name(&format!("bsrv{tag}")), name(&format!("bcli{tag}")));
        let mut args = vec!["pair", "--server-name", &srv, "--client-name", &cli, "--addr", addr, "--count", "10"];
        args.extend(extra);
        let out = load(&args);
        w.pids.extend(out.iter().filter(|v| v.get("role").is_some()).map(pid_of));
        w.conns.extend(out.iter().filter(|v| v.get("conn").is_some()).map(|v| {
            (ep(&v["local"]).to_string(), ep(&v["remote"]).to_string())
        }));
    }
    for (tag, args) in [
        ("ubnd", &["--bind", "127.0.0.1:0", "--connect", "127.0.0.1:9"][..]),
        ("usnd", &["--sendto", "127.0.0.1:9"][..]),
        ("ucn6", &["--connect", "[::1]:9"][..]),
    ] {
        let comm = name(tag);
        let mut full = vec!["udp", "--name", &comm];
        full.extend_from_slice(args);
        let out = load(&full);
        w.pids.extend(out.iter().filter(|v| v.get("local").is_some()).map(pid_of));
        w.udp_comms.push(comm);
    }
    assert_eq!(w.conns.len(), 30, "netstat-load made {} connections", w.conns.len());
    assert_eq!(w.pids.len(), 9, "pids of 3 pairs and 3 UDP processes: {:?}", w.pids);
    w
}

/// Every connection closed on both ends and every UDP socket closed.
fn complete(w: &Workload, ev: &[Value]) -> bool {
    let closed = |l: &str, r: &str| ev.iter().any(|e| ep(&e["local"]) == l && ep(&e["remote"]) == r && e["new_state"] == "CLOSED");
    w.conns.iter().all(|(l, r)| closed(l, r) && closed(r, l))
        && w.udp_comms.iter().all(|c| ev.iter().any(|e| e["comm"] == c.as_str() && e["type"] == "udp_close"))
}

#[test]
fn every_backend_reports_the_same_events_as_the_tracepoint_path() {
    // Each tracer sees the whole machine: a large ring keeps other work's
    // events from costing ours (a loss would be reported, and fail below).
    let ring = ["--ring-size", "67108864"];
    let under_test = Stream::start(&ring);
    let reference = Stream::start_with_backend("tracepoint", &ring);
    let w = run_workload();
    let done_a = under_test.wait_for(Duration::from_secs(20), |ev| complete(&w, ev));
    let done_b = reference.wait_for(Duration::from_secs(20), |ev| complete(&w, ev));
    let a = under_test.stop();
    let b = reference.stop();
    let (lost_a, lost_b) = (lost(&a), lost(&b));
    assert!(
        done_a && done_b,
        "a tracer missed the end of the workload (backend {}: {done_a}, tracepoint: {done_b}); lost: {lost_a:?} / {lost_b:?}",
        backend()
    );

    assert!(lost_a.is_empty() && lost_b.is_empty(), "events were lost, so the two cannot be compared: {lost_a:?} / {lost_b:?}");
    let (ma, mb) = (multiset(&a, &w.pids), multiset(&b, &w.pids));
    // 30 connections x (5 server + at least 4 client transitions + accept) plus UDP.
    let total: usize = ma.values().sum();
    assert!(total >= 30 * 10, "only {total} events of the workload under backend {}", backend());
    let diff = |x: &BTreeMap<String, usize>, y: &BTreeMap<String, usize>| -> Vec<String> {
        x.iter()
            .filter(|(k, n)| y.get(*k) != Some(n))
            .map(|(k, n)| format!("{n}x {k} (other side: {}x)", y.get(k).copied().unwrap_or(0)))
            .take(20)
            .collect()
    };
    let (only_a, only_b) = (diff(&ma, &mb), diff(&mb, &ma));
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "backend {} and the tracepoint path disagree ({} vs {} events; lost: {lost_a:?} / {lost_b:?})\n\
         as {} reports them:\n  {}\nas the tracepoint path reports them:\n  {}",
        backend(),
        total,
        mb.values().sum::<usize>(),
        backend(),
        only_a.join("\n  "),
        only_b.join("\n  ")
    );
}
