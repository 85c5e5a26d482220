//! Kernel tests: every event carries the kernel's socket cookie, the one the
//! socket itself reports (SO_COOKIE, printed by netstat-load after the calls
//! whose events are checked, since asking assigns one) and sock_diag reports
//! for its TIME_WAIT successor (`ss -e`: `sk:` in hex). TCP over IPv4 and
//! IPv6, both ends and the accept; UDP bind, connect, implicit bind, close.
mod support;

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use support::*;

fn cookie(e: &Value) -> u64 {
    e["cookie"].as_u64().unwrap_or(0)
}

/// Every event of `events` must carry `want` (and `want` must be a cookie).
fn assert_cookie(events: &[&Value], want: u64, what: &str, all: &[Value], needle: &str) {
    assert_ne!(want, 0, "netstat-load reported no cookie for {what}");
    assert!(!events.is_empty(), "no events for {what}\n{}", closest(all, needle));
    for e in events {
        assert_eq!(cookie(e), want, "{what}: event without the socket's cookie {want}: {e}\n{}", closest(all, needle));
    }
}

/// `ss -tane` in `ns`: (local, peer) -> cookie, for the rows of closing
/// sockets (TIME-WAIT, and FIN-WAIT-2: an orphaned client end becomes a
/// timewait socket in FIN_WAIT2 before the peer's FIN arrives; it carries the
/// same cookie), with ss's whole output for a failure message.
fn time_wait_cookies(ns: &Netns) -> (HashMap<(String, String), u64>, String) {
    let out = ns.cmd("ss", &["-tane"]).output().expect("run ss");
    assert!(out.status.success(), "ss -tane: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut m = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || !matches!(f[0], "TIME-WAIT" | "FIN-WAIT-2") {
            continue;
        }
        if let Some(sk) = f.iter().find_map(|t| t.strip_prefix("sk:")) {
            if let Ok(c) = u64::from_str_radix(sk, 16) {
                m.insert((f[3].to_string(), f[4].to_string()), c);
            }
        }
    }
    (m, text)
}

fn tcp_cookies(addr: &str) {
    const N: usize = 5;
    // A namespace of our own: its TIME_WAIT sockets are ours alone, and its
    // TIME_WAIT table is not full of a busy host's.
    let ns = Netns::new("cookie");
    // The stream runs in ours, the connections in theirs.
    let stream = Stream::start(&["--all-namespaces"]);
    let (srv, cli) = (name("ksrv"), name("kcli"));
    let out = ns.load(&[
        "pair", "--server-name", &srv, "--client-name", &cli, "--addr", addr, "--count", &N.to_string(), "--cookies",
    ]);
    let client_pid = out.iter().find(|v| v["role"] == "client").map(pid_of).expect("client line");
    let conns: Vec<&Value> = out.iter().filter(|v| v.get("conn").is_some()).collect();
    let accepted: HashMap<(String, String), u64> = out
        .iter()
        .filter(|v| v.get("accepted").is_some())
        .map(|v| ((v["local"].as_str().unwrap().into(), v["remote"].as_str().unwrap().into()), v["cookie"].as_u64().unwrap()))
        .collect();
    assert_eq!((conns.len(), accepted.len()), (N, N), "netstat-load output: {out:?}");
    let all_closed = |ev: &[Value]| {
        conns.iter().all(|c| {
            let (l, r) = (c["local"].as_str().unwrap(), c["remote"].as_str().unwrap());
            let fin = |a: &str, b: &str| ev.iter().any(|e| ep(&e["local"]) == a && ep(&e["remote"]) == b && e["new_state"] == "CLOSED");
            fin(l, r) && fin(r, l)
        })
    };
    // A loaded guest may take a while to deliver the closes.
    stream.wait_for(Duration::from_secs(45), all_closed);
    // The client closes first: once both ends are CLOSED, the client's are
    // TIME_WAIT sockets, for 60 s (read only now: a slow guest may still be
    // processing the server's FIN when netstat-load is done). Until every
    // client end is there, ask again, for at most 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (tw, ss_text) = loop {
        let (tw, text) = time_wait_cookies(&ns);
        let all = conns.iter().all(|c| tw.contains_key(&(c["local"].as_str().unwrap().to_string(), c["remote"].as_str().unwrap().to_string())));
        if all || std::time::Instant::now() > deadline {
            break (tw, text);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Only the namespace's events: a busy host may have the same 4-tuples.
    let inum = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(format!("/run/netns/{}", ns.name)).expect("netns file"));
    let events: Vec<Value> = stream.stop().into_iter().filter(|e| e["netns"].as_u64() == Some(inum)).collect();

    let mut missing = Vec::new();
    for c in &conns {
        let (local, remote) = (c["local"].as_str().unwrap(), c["remote"].as_str().unwrap());
        let want = c["cookie"].as_u64().unwrap_or(0);
        // Client end, CLOSED->SYN_SENT included (before the port is chosen:
        // the client's last one to that peer before the end's first event;
        // the client connects one at a time).
        let mut client = for_tuple(&events, local, remote);
        assert!(!client.is_empty(), "no events for client end {local} -> {remote}\n{}", closest(&events, local));
        let first = events.iter().position(|e| std::ptr::eq(e, client[0])).unwrap();
        let syn = events[..first].iter().rev().find(|e| {
            transition(e) == "CLOSED->SYN_SENT" && ep(&e["remote"]) == remote && e["pid"] == client_pid
        });
        let syn = syn.unwrap_or_else(|| panic!("no CLOSED->SYN_SENT for {local} -> {remote}\n{}", closest(&events, remote)));
        client.push(syn);
        assert_cookie(&client, want, &format!("client end {local} -> {remote}"), &events, local);

        // Server end: every transition of the accepted socket and the accept.
        let server = for_tuple(&events, remote, local);
        let want_srv = accepted.get(&(remote.to_string(), local.to_string())).copied().unwrap_or(0);
        assert!(
            server.iter().any(|e| e["type"] == "tcp_accept"),
            "no tcp_accept for {remote} -> {local}\n{}",
            closest(&events, local)
        );
        assert_cookie(&server, want_srv, &format!("server end {remote} -> {local}"), &events, local);
        assert_ne!(want, want_srv, "both ends of {local} -> {remote} reported one cookie");

        // sock_diag's TIME_WAIT row carries the cookie of the socket it
        // replaced. sk:0 would mean ss read /proc/net/tcp (tcp_diag not
        // loaded): the witness is missing, and that fails too (the VM suite
        // loads tcp_diag for this).
        // Twice in fresh-clone runs (6.12 guests, auto and tracepoint) one
        // client end of five had no row at all, in any state, 20 s after a
        // clean FIN exchange (its events show FIN_WAIT_2 -> CLOSED with the
        // peer's FIN received), while the other four were in TIME-WAIT: the
        // guest's kernel let a timewait socket go. The events' cookie is
        // checked against SO_COOKIE above for every end; this second
        // witness must confirm most of them, and every row it has.
        let Some(tw_cookie) = tw.get(&(local.to_string(), remote.to_string())) else {
            missing.push(format!("{local} -> {remote}\n{}", closest(&events, local)));
            continue;
        };
        assert_eq!(*tw_cookie, want, "ss -tane's closing row for {local} -> {remote} (all: {tw:?})");
    }
    assert!(
        missing.len() <= 1,
        "{} of {N} client ends have no TIME-WAIT or FIN-WAIT-2 row in ss -tane\nss:\n{ss_text}\n{}",
        missing.len(),
        missing.join("\n")
    );
    if !missing.is_empty() {
        eprintln!("note: no closing row in ss for {}", missing.join("\n"));
    }
}

#[test]
fn tcp_ipv4_events_carry_the_socket_cookie() {
    tcp_cookies("127.0.0.1");
}

#[test]
fn tcp_ipv6_events_carry_the_socket_cookie() {
    tcp_cookies("::1");
}

#[test]
fn udp_events_carry_the_socket_cookie() {
    let stream = Stream::start(&[]);
    let mut runs = Vec::new();
    for (tag, args, kinds) in [
        ("kubnd", &["--bind", "127.0.0.1:0", "--connect", "127.0.0.1:9"][..], &["udp_bind", "udp_connect", "udp_close"][..]),
        ("kusnd", &["--sendto", "127.0.0.1:9"][..], &["udp_bind", "udp_close"][..]),
        ("kucn6", &["--connect", "[::1]:9"][..], &["udp_bind", "udp_connect", "udp_close"][..]),
        ("kubd6", &["--bind", "[::1]:0"][..], &["udp_bind", "udp_close"][..]),
    ] {
        let comm = name(tag);
        let mut full = vec!["udp", "--name", &comm];
        full.extend_from_slice(args);
        let out = load(&full);
        let line = out.iter().find(|v| v.get("local").is_some()).expect("socket line").clone();
        runs.push((comm, line, kinds));
    }
    let done = |ev: &[Value]| runs.iter().all(|(c, _, _)| ev.iter().any(|e| e["comm"] == c.as_str() && e["type"] == "udp_close"));
    stream.wait_for(Duration::from_secs(10), done);
    let events = stream.stop();
    for (comm, line, kinds) in &runs {
        let mine: Vec<&Value> = events.iter().filter(|e| e["comm"] == comm.as_str()).collect();
        for k in *kinds {
            assert!(mine.iter().any(|e| e["type"] == *k), "{comm}: no {k} event; its events: {mine:?}");
        }
        let want = line["cookie"].as_u64().unwrap_or(0);
        let local = line["local"].as_str().unwrap();
        assert_cookie(&mine, want, &format!("UDP socket {local} of {comm}"), &events, local);
    }
}
