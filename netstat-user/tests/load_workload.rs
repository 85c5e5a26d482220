//! The `netstat-load` workload itself: the sockets it reports are real, its
//! processes carry the names asked for, and every subcommand ends on time.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

fn load_bin() -> &'static str {
    env!("CARGO_BIN_EXE_netstat-load")
}

fn run(args: &[&str]) -> Vec<Value> {
    let out = Command::new(load_bin()).args(args).output().expect("run netstat-load");
    assert!(out.status.success(), "netstat-load {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn comm(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim_end().to_string()
}

/// Spawn netstat-load and return it with its first stdout line parsed.
fn spawn_first_line(args: &[&str]) -> (std::process::Child, Value, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(load_bin()).args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    (child, v, out)
}

#[test]
fn pair_prints_one_line_per_connection() {
    let out = run(&["pair", "--server-name", "ldsrv", "--client-name", "ldcli", "--addr", "127.0.0.1", "--count", "3"]);
    let server = out.iter().find(|v| v["role"] == "server").expect("server line");
    let client = out.iter().find(|v| v["role"] == "client").expect("client line");
    assert_ne!(server["pid"], client["pid"], "server and client must be separate processes");
    let listen = server["listen"].as_str().unwrap();
    let conns: Vec<&Value> = out.iter().filter(|v| v.get("conn").is_some()).collect();
    assert_eq!(conns.len(), 3, "{out:?}");
    for (i, c) in conns.iter().enumerate() {
        assert_eq!(c["conn"], i as u64);
        assert_eq!(c["remote"], listen);
        assert!(c["local"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
    }
    assert_eq!(out.last().unwrap()["done"], true, "{out:?}");
    assert_eq!(out.last().unwrap()["count"], 3);
}

#[test]
fn pair_processes_carry_their_names_ipv6() {
    let (mut child, server, mut rest) = spawn_first_line(&[
        "pair", "--server-name", "ldsrv6", "--client-name", "ldcli6", "--addr", "::1", "--count", "2", "--hold-ms", "400",
    ]);
    assert_eq!(server["role"], "server", "{server}");
    assert!(server["listen"].as_str().unwrap().starts_with("[::1]:"), "{server}");
    assert_eq!(comm(server["pid"].as_u64().unwrap()), "ldsrv6");
    let mut line = String::new();
    rest.read_line(&mut line).unwrap();
    let client: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(client["role"], "client", "{client}");
    assert_eq!(comm(client["pid"].as_u64().unwrap()), "ldcli6");
    assert!(child.wait().unwrap().success());
}

#[test]
fn hold_opens_what_it_reports_under_its_name() {
    let (mut server, ready, _out) =
        spawn_first_line(&["hold", "--name", "ldhold", "--tcp-listen", "127.0.0.1:0", "--udp-bind", "[::1]:0", "--seconds", "5"]);
    assert_eq!(ready["ready"], true, "{ready}");
    let pid = ready["pid"].as_u64().unwrap();
    assert_eq!(pid, server.id() as u64);
    assert_eq!(comm(pid), "ldhold");
    let listen = ready["tcp_listen"][0].as_str().unwrap();
    assert!(!listen.ends_with(":0"), "port 0 must be reported as the bound port: {ready}");
    assert!(ready["udp_bind"][0].as_str().unwrap().starts_with("[::1]:"), "{ready}");

    let client = run(&["hold", "--name", "ldholdc", "--tcp-connect", listen, "--seconds", "0"]);
    assert_eq!(client[0]["tcp_connect"][0]["remote"], listen, "{client:?}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn hold_ends_on_its_own() {
    let t = Instant::now();
    run(&["hold", "--name", "ldshort", "--tcp-listen", "127.0.0.1:0", "--seconds", "1"]);
    assert!(t.elapsed() < Duration::from_secs(4), "hold --seconds 1 took {:?}", t.elapsed());
}

#[test]
fn udp_implicit_bind_and_close() {
    let out = run(&["udp", "--name", "ldudp", "--sendto", "127.0.0.1:9"]);
    let local = out[0]["local"].as_str().unwrap();
    assert!(!local.ends_with(":0"), "sendto must bind implicitly: {out:?}");
    assert!(out[0]["remote"].is_null());
    assert_eq!(out[1]["closed"], true);
    let out = run(&["udp", "--name", "ldudp6", "--connect", "[::1]:9"]);
    assert!(out[0]["local"].as_str().unwrap().starts_with("[::1]:"), "{out:?}");
    assert_eq!(out[0]["remote"], "[::1]:9");
}

#[test]
fn hold_many_spreads_over_named_processes() {
    let (mut child, ready, _out) =
        spawn_first_line(&["hold-many", "--name", "ldmany", "--connections", "300", "--processes", "3", "--seconds", "5"]);
    assert_eq!(ready["ready"], true, "{ready}");
    let pids: Vec<u64> = ready["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 3);
    let mut sockets = 0;
    for p in &pids {
        assert_eq!(comm(*p), "ldmany");
        sockets += std::fs::read_dir(format!("/proc/{p}/fd"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
            .count();
    }
    // Both ends of every connection (the listeners close once all are accepted).
    assert_eq!(sockets, 2 * 300);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn churn_reports_its_rate() {
    let t = Instant::now();
    let out = run(&["churn", "--name", "ldchurn", "--seconds", "1", "--rate", "500", "--processes", "2"]);
    let r = &out[0];
    let n = r["connections"].as_u64().unwrap();
    assert!((300..=600).contains(&n), "500/s for 1 s made {n}: {r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(t.elapsed() < Duration::from_secs(5));
}
