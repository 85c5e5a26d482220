//! --delta against the kernel's own counters: in a network namespace of
//! its own (nothing else sends there), datagrams to a closed port between
//! two displays must show up as exactly that change, and the kernel's
//! /proc/net/snmp, read around the sending, is the independent witness.
//! vm: one backend (kernel counters read from /proc and netlink, no tracer)
mod support;

use std::{
    io::{BufRead, BufReader},
    net::UdpSocket,
    os::fd::AsRawFd,
    process::{Command, Stdio},
};

use serde_json::Value;
use support::*;

fn usage_error(args: &[&str]) {
    let o = Command::new(netstat_bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "netstat {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("--delta needs an INTERVAL and -e or -s"), "{err:?}");
}

#[test]
fn delta_needs_an_interval_and_counters() {
    usage_error(&["-s", "--delta"]);
    usage_error(&["-e", "--delta", "--json"]);
    usage_error(&["-an", "--delta", "1"]);
    usage_error(&["-r", "--delta", "1"]);
    usage_error(&["--delta", "1"]);
}

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let call = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("nsdelta-{}-{call}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        assert!(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap().success());
        Netns(name)
    }

    /// `group`'s `name` counter in the namespace's /proc/net/snmp.
    fn snmp(&self, group: &str, name: &str) -> i64 {
        let o = Command::new("ip").args(["netns", "exec", &self.0, "cat", "/proc/net/snmp"]).output().unwrap();
        let text = String::from_utf8(o.stdout).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("{group}: "))).collect();
        let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
        names.zip(values).find(|(n, _)| *n == name).map(|(_, v)| v.parse().unwrap()).unwrap()
    }

    /// Sends `n` datagrams from inside the namespace (from a thread that
    /// joins it) to a port nobody listens on.
    fn send_to_closed_port(&self, n: usize) {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..n {
                s.send_to(b"delta", "127.0.0.1:9").unwrap();
            }
        })
        .join()
        .unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn udp_v4<'a>(doc: &'a Value, part: &str) -> &'a Value {
    let sections = if part.is_empty() { &doc["statistics"] } else { &doc[part]["statistics"] };
    sections.as_array().unwrap().iter().find(|s| s["section"] == "UDP Statistics for IPv4").unwrap()
}

#[test]
fn delta_of_udp_no_ports_equals_the_kernels_count() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    const N: i64 = 25;
    let ns = Netns::new();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, &netstat_bin(), "-e", "-s", "-p", "udp", "--delta", "5", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    schema::check(&first, "info_document");
    assert!(first.get("delta").is_none() && first.get("error_share").is_none(), "the first display has no change: {first}");

    // The sending and its two readings of the kernel counters fit well
    // inside one 5 s interval, even in a slow guest (1 s did not, once).
    let (ports, unreach) = (ns.snmp("Udp", "NoPorts"), ns.snmp("Icmp", "OutDestUnreachs"));
    ns.send_to_closed_port(N as usize);
    let (ports_after, unreach_after) = (ns.snmp("Udp", "NoPorts"), ns.snmp("Icmp", "OutDestUnreachs"));
    assert_eq!(ports_after - ports, N, "the kernel's own count of datagrams to no port");

    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    schema::check(&second, "info_document");
    let d = &udp_v4(&second, "delta")["counters"];
    assert_eq!(d["No Ports"], ports_after - ports, "{second}");
    assert_eq!(d["Datagrams Received"], 0, "{second}");
    assert_eq!(d["Receive Errors"], 0, "{second}");
    // Each datagram came in on lo and was answered by an ICMP port
    // unreachable, which came in on lo too.
    let e = &second["delta"]["interface_statistics"]["Unicast packets"];
    assert_eq!(e["received"], N + (unreach_after - unreach), "{second}");
    let share = second["error_share"].as_array().unwrap();
    let udp = share.iter().find(|s| s["section"] == "UDP Statistics for IPv4").unwrap();
    assert_eq!(udp["received"]["packets"], N, "{second}");
    assert_eq!(udp["received"]["discards"], N, "{second}");
    assert_eq!(udp["received"]["discard_share"], 1.0, "{second}");
    assert_eq!(udp["received"]["error_share"], 0.0, "{second}");
    let ifs = share.iter().find(|s| s["section"] == "Interface Statistics").unwrap();
    assert_eq!(ifs["received"]["packets"], e["received"], "{second}");
}

/// In text, the first display is exactly Windows' (what netstat prints
/// without --delta); the next puts each change beside its counter and one
/// line with the interval's share under the section.
#[test]
fn delta_text_beside_each_counter() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let ns = Netns::new();
    let plain = Command::new("ip").args(["netns", "exec", &ns.0, &netstat_bin(), "-s", "-p", "udp"]).output().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, &netstat_bin(), "-s", "-p", "udp", "--delta", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    while !first.ends_with("State\n") {
        assert!(out.read_line(&mut first).unwrap() > 0, "{first}");
    }
    ns.send_to_closed_port(3);
    let mut second = String::new();
    while !second.contains("since last display") {
        assert!(out.read_line(&mut second).unwrap() > 0, "{second}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    assert_eq!(first, String::from_utf8(plain.stdout).unwrap());
    assert!(second.contains("  No Ports              = 3  +3\n"), "{second}");
    assert!(second.contains("  (since last display: received 3: errors 0 (0.00%), discards 3 (100.00%))"), "{second}");
}
