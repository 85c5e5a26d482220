//! Golden output of every display option against fixture /proc and /sys
//! trees (tests/fixtures/*, made by make_fixtures.py): IPv6, v4-mapped
//! addresses, truncated lines, counters beyond u64, hostile process names,
//! a missing IPv6 stack. With a fixture proc root netstat reads /proc/net/*
//! (netlink cannot describe a fixture). These tests only compare: after a
//! deliberate change, `cargo xtask bless` rewrites the expected files (and
//! refuses under CI=true); review the diff.
mod fixture;

use std::{path::PathBuf, process::Command};

fn fixtures() -> PathBuf {
    fixture::fixtures()
}

fn run(tree: &str, args: &[&str]) -> (String, String, i32) {
    fixture::run(tree, args)
}

fn golden(tree: &str, name: &str, args: &[&str]) {
    let (out, err, code) = run(tree, args);
    assert_eq!(code, 0, "netstat {args:?} failed: {err}");
    assert!(err.is_empty(), "netstat {args:?} wrote to stderr: {err}");
    let path = fixtures().join(tree).join("golden").join(format!("{name}.txt"));
    // `cargo xtask bless` asks for what each case printed, in a scratch
    // directory of its own (<dir>/<tree>/<name>.txt, never the golden
    // layout); copying it over the expected files is its job, not ours.
    if let Some(dir) = std::env::var_os("NETSTAT_GOLDEN_ACTUAL") {
        let actual = PathBuf::from(dir).join(tree).join(format!("{name}.txt"));
        std::fs::create_dir_all(actual.parent().unwrap()).unwrap();
        std::fs::write(&actual, &out).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if out != want {
        let diff: Vec<String> = want
            .lines()
            .zip(out.lines().chain(std::iter::repeat("<missing>")))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  want {a:?}\n  got  {b:?}", i + 1))
            .collect();
        panic!("netstat {args:?} differs from {}:\n{}\n--- full output ---\n{out}", path.display(), diff.join("\n"));
    }
}

macro_rules! golden_tests {
    ($($name:ident: $tree:literal, [$($arg:literal),*];)*) => {
        $(#[test] fn $name() { golden($tree, stringify!($name), &[$($arg),*]); })*
    };
}

golden_tests! {
    active_tcp_only: "basic", ["-n"];
    names_foreign_only: "basic", ["-a"];
    names_fqdn: "basic", ["-af"];
    all: "basic", ["-an"];
    all_with_pid: "basic", ["-ano"];
    executables: "basic", ["-anb"];
    executables_full_path: "basic", ["-anbv"];
    pid_and_offload: "basic", ["-a", "-n", "-o", "-t"];
    proto_tcp_is_ipv4: "basic", ["-an", "-p", "tcp"];
    proto_udpv6: "basic", ["-an", "-p", "UDPv6"];
    listening: "basic", ["-n", "--listening"];
    ipv6_only: "basic", ["-an", "-6"];
    udp_without_all: "basic", ["-n", "--udp"];
    tcp_ipv4_long_options: "basic", ["--all", "--numeric", "--owner", "--tcp", "-4"];
    json_connections: "basic", ["-ano", "--json"];
    ethernet: "basic", ["-e"];
    ethernet_per_interface: "basic", ["-e", "-v"];
    ethernet_and_statistics: "basic", ["-es"];
    statistics: "basic", ["-s"];
    statistics_tcp: "basic", ["-s", "-p", "tcp"];
    statistics_tcpv6: "basic", ["-s", "-p", "tcpv6"];
    statistics_icmpv6: "basic", ["-s", "-p", "icmpv6"];
    statistics_ipv4_only: "basic", ["-s", "-4"];
    routes: "basic", ["-r"];
    routes_ipv6_only: "basic", ["-r", "-6"];
    json_routes: "basic", ["-r", "--json"];
    json_statistics_ethernet: "basic", ["-se", "--json"];
    noipv6_all: "noipv6", ["-ano"];
    noipv6_statistics: "noipv6", ["-s"];
    noipv6_routes: "noipv6", ["-r"];
}

/// JSON output parses and carries what the text shows.
#[test]
fn json_is_one_document_per_display() {
    let (out, _, code) = run("basic", &["-anob", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 14);
    let ssh = conns.iter().find(|c| c["local"]["port"] == 22 && c["state"] == "LISTENING").unwrap();
    assert_eq!(ssh["pid"], 100);
    assert_eq!(ssh["comm"], "sshd");
    assert_eq!(ssh["exe"], "/usr/sbin/sshd");
    assert_eq!(ssh["owner_source"], "proc");
    assert_eq!(v["schema"], 1);
    let (out, _, _) = run("basic", &["-s", "-p", "tcp", "--json"]);
    let _: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Beyond u64, kept exactly (a JSON number has no size limit).
    assert!(out.contains(r#""Segments Received":99999999999999999999999"#), "{out}");
}

/// INTERVAL redisplays until interrupted (the snapshot loop: --no-trace;
/// the traced loop is the live table's and has its own tests).
#[test]
fn interval_redisplays() {
    let root = fixtures().join("basic");
    let mut child = Command::new(env!("CARGO_BIN_EXE_netstat"))
        .args(["-n", "1", "--no-trace", "--proc-root"])
        .arg(root.join("proc"))
        .arg("--sys-root")
        .arg(root.join("sys"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(child.try_wait().unwrap().is_none(), "netstat with INTERVAL exited by itself");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let n = text.matches("Active Connections").count();
    assert!((2..=4).contains(&n), "expected 2-4 displays in 2.5 s at 1 s, got {n}:\n{text}");
}
