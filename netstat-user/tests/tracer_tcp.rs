//! Kernel tests: real loopback TCP connections between a server and a client
//! process with distinctive names; both ends' transitions must carry the
//! right PID and comm, including the server side that runs in softirq.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

struct Conn {
    local: String,
    remote: String,
}

fn run_pair(addr: &str, count: usize) {
    let stream = Stream::start(&[]);
    let (srv, cli) = (name("tsrv"), name("tcli"));
    let out = load(&[
        "pair", "--server-name", &srv, "--client-name", &cli, "--addr", addr,
        "--count", &count.to_string(), "--hold-ms", "0",
    ]);
    let server_pid = out.iter().find(|v| v["role"] == "server").map(pid_of).expect("server line");
    let client_pid = out.iter().find(|v| v["role"] == "client").map(pid_of).expect("client line");
    let conns: Vec<Conn> = out
        .iter()
        .filter(|v| v.get("conn").is_some())
        .map(|v| Conn {
            local: ep(&v["local"]).to_string(),
            remote: ep(&v["remote"]).to_string(),
        })
        .collect();
    assert_eq!(conns.len(), count, "netstat-load made {} connections", conns.len());
    let all_closed = |ev: &[Value]| {
        conns.iter().all(|c| {
            let fin = |l: &str, r: &str| {
                ev.iter().any(|e| ep(&e["local"]) == l && ep(&e["remote"]) == r && e["new_state"] == "CLOSED")
            };
            fin(&c.local, &c.remote) && fin(&c.remote, &c.local)
        })
    };
    stream.wait_for(Duration::from_secs(10), all_closed);
    let events = stream.stop();

    // Short-lived: gone long before any poller of /proc or sock_diag looks
    // again (netstat -c and ss loops poll each second). 20 ms, not 1: a
    // guest under emulation (the 6.1 VM in CI) takes over 1 ms between
    // connect() returning and close().
    const SHORT_NS: i64 = 20_000_000;
    let mut short_lived = 0;
    let mut shortest = i64::MAX;
    for c in &conns {
        // Client end: runs in the client's syscalls and in softirq.
        let client = for_tuple(&events, &c.local, &c.remote);
        let states: Vec<String> = client.iter().filter(|e| e["type"] == "tcp_state").map(|e| transition(e)).collect();
        assert!(
            states.len() >= 3
                && states[0] == "SYN_SENT->ESTABLISHED"
                && states[1] == "ESTABLISHED->FIN_WAIT_1"
                && states.last().unwrap().ends_with("->CLOSED"),
            "client end {} -> {}: transitions {states:?}\n{}",
            c.local, c.remote, closest(&events, &c.local)
        );
        for e in &client {
            assert_eq!(e["pid"], client_pid, "client event attributed to the wrong process: {e}");
            assert_eq!(e["comm"], cli.as_str(), "client event with the wrong comm: {e}");
        }
        // CLOSED->SYN_SENT happens before the port is chosen: find it by socket.
        let sock = &client[0]["cookie"];
        assert!(
            events.iter().any(|e| e["cookie"] == *sock
                && transition(e) == "CLOSED->SYN_SENT"
                && ep(&e["remote"]) == c.remote.as_str()
                && e["pid"] == client_pid
                && e["comm"] == cli.as_str()),
            "no attributed CLOSED->SYN_SENT for {} -> {}\n{}",
            c.local, c.remote, closest(&events, &c.remote)
        );
        // Lived from ESTABLISHED to the close() (FIN_WAIT_1), by kernel time.
        let lived = ns_of(client[1]) - ns_of(client[0]);
        shortest = shortest.min(lived);
        if lived < SHORT_NS {
            short_lived += 1;
        }

        // Server end: the accepted socket; SYN_RECEIVED and ESTABLISHED run
        // in softirq while the client is on the CPU.
        let server = for_tuple(&events, &c.remote, &c.local);
        let states: Vec<String> = server.iter().filter(|e| e["type"] == "tcp_state").map(|e| transition(e)).collect();
        assert_eq!(
            states,
            ["LISTENING->SYN_RECEIVED", "SYN_RECEIVED->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSED"],
            "server end {} -> {}\n{}",
            c.remote, c.local, closest(&events, &c.local)
        );
        assert!(
            server.iter().any(|e| e["type"] == "tcp_accept"),
            "no tcp_accept for {} -> {}\n{}",
            c.remote, c.local, closest(&events, &c.local)
        );
        for e in &server {
            assert_eq!(e["pid"], server_pid, "server event attributed to the wrong process: {e}");
            assert_eq!(e["comm"], srv.as_str(), "server event with the wrong comm: {e}");
        }
        // Before accept() the accepted socket belongs to its listener's owner
        // (on 6.1/6.12 that transition is reported late, next to the accept).
        let syn = server.iter().find(|e| e["new_state"] == "SYN_RECEIVED").unwrap();
        assert_eq!(syn["owner_source"], "listener", "pre-accept owner should come from the listener: {syn}");
    }
    assert!(
        short_lived > 0,
        "no connection lived under {} ms (the shortest {} us); the test did not cover short-lived connections",
        SHORT_NS / 1_000_000,
        shortest / 1000
    );
}

/// Nanoseconds within the day of an RFC 3339 `time` (tests span no midnight).
fn ns_of(e: &Value) -> i64 {
    let t = e["time"].as_str().unwrap();
    let hms = &t[11..t.len() - 1];
    let (hms, frac) = hms.split_once('.').unwrap();
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let (h, m, s) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    ((h * 60 + m) * 60 + s) * 1_000_000_000 + frac.parse::<i64>().unwrap()
}

#[test]
fn tcp_ipv4_both_ends_attributed() {
    run_pair("127.0.0.1", 50);
}

#[test]
fn tcp_ipv6_both_ends_attributed() {
    run_pair("::1", 50);
}

#[test]
fn text_stream_names_the_owner() {
    let mut cmd = std::process::Command::new(netstat_bin());
    cmd.args(["--stream", "--backend", &backend(), "--duration", "60"]);
    let stream = Lines::spawn(cmd);
    let (srv, cli) = (name("xsrv"), name("xcli"));
    let wanted = |ls: &[String], pid: u32| {
        ls.iter().find(|l| l.contains("SYN_RECEIVED -> ESTABLISHED") && l.contains(&srv) && l.contains(&format!(" {pid} "))).cloned()
    };
    // The tracer attaches while we start connecting: repeat until it shows.
    let mut found = None;
    for _ in 0..60 {
        let out = load(&["pair", "--server-name", &srv, "--client-name", &cli, "--addr", "127.0.0.1", "--count", "1"]);
        let server_pid = out.iter().find(|v| v["role"] == "server").map(pid_of).unwrap();
        if stream.wait_for(Duration::from_millis(300), |ls| wanted(ls, server_pid).is_some()) {
            found = wanted(&stream.lines(), server_pid);
            break;
        }
    }
    let (status, raw) = stream.stop_raw();
    assert!(status.success());
    let line = found.unwrap_or_else(|| panic!("no server-side ESTABLISHED line for {srv}:\n{}", String::from_utf8_lossy(&raw)));
    assert!(line.contains(" tcp "), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
}
