//! The netstat command against the real kernel, each test in a network
//! namespace it creates (empty but for what the test opens), so the output
//! can be compared row by row with what was opened and with `ss` run in the
//! same namespace. Sockets come from `netstat-load` processes with
//! distinctive names. Namespaces (and /etc/netns/<name>) are removed by a
//! Drop guard, also when an assertion fails.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

const NETSTAT: &str = env!("CARGO_BIN_EXE_netstat");
const LOAD: &str = env!("CARGO_BIN_EXE_netstat-load");

/// A unique tag per test and run (namespace and process names).
fn tag(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}{}", std::process::id() % 1000, nanos % 1000)
}

struct Netns {
    name: String,
    children: Vec<Child>,
    etc: Option<PathBuf>,
}

impl Netns {
    fn new(prefix: &str) -> Netns {
        let name = format!("nstest-{}", tag(prefix));
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name, children: Vec::new(), etc: None };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Files that `ip netns exec` mounts over /etc (hosts, resolv.conf, ...).
    /// Must be written before the first exec that should see them.
    fn etc_file(&mut self, file: &str, text: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
        self.etc = Some(dir);
    }

    fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    fn exec(&self, prog: &str, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name, prog]).args(args).output().expect("ip netns exec")
    }

    /// netstat in the namespace; must succeed with nothing on stderr.
    fn netstat(&self, args: &[&str]) -> String {
        let o = self.exec(NETSTAT, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.is_empty(), "netstat {args:?} failed ({}): {err}", o.status);
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.netstat(&a)).expect("netstat --json prints JSON")
    }

    /// Start `netstat-load <args>` in the namespace; return its ready line.
    fn load(&mut self, args: &[&str]) -> Value {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, LOAD])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn netstat-load");
        let out = child.stdout.take().unwrap();
        self.children.push(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).expect("netstat-load ready within 15 s");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("netstat-load said {line:?}: {e}"));
        assert_eq!(v["ready"], true, "netstat-load not ready: {line}");
        v
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        if let Some(d) = &self.etc {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn run_ok(c: &mut Command) {
    let o = c.output().expect("run command");
    assert!(o.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// One row of netstat's text, with its -o PID and -b line when shown.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    proto: String,
    local: String,
    foreign: String,
    state: String,
    pid: Option<String>,
    exe: Option<String>,
}

fn rows(text: &str, with_pid: bool) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(" [") {
            out.last_mut().expect("-b line under a row").exe = Some(rest.trim_end_matches(']').to_string());
            continue;
        }
        if line == " Can not obtain ownership information" {
            out.last_mut().unwrap().exe = Some(String::new());
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if !matches!(f.first(), Some(&"TCP") | Some(&"UDP")) {
            continue;
        }
        let has_state = f[0] == "TCP";
        let state = if has_state { f[3].to_string() } else { String::new() };
        let next = if has_state { 4 } else { 3 };
        let pid = with_pid.then(|| f.get(next).expect("PID column").to_string());
        out.push(Row { proto: f[0].into(), local: f[1].into(), foreign: f[2].into(), state, pid, exe: None });
    }
    out
}

/// `ss -tan` / `ss -uan` rows in netstat's terms: (proto, local, foreign, state).
fn ss_rows(ns: &Netns, proto: &str, extra: &[&str]) -> BTreeSet<(String, String, String, String)> {
    let flag = if proto == "TCP" { "-tan" } else { "-uan" };
    let mut args = vec![flag];
    args.extend_from_slice(extra);
    let o = ns.exec("ss", &args);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let norm_local = |a: &str| if let Some(p) = a.strip_prefix("*:") { format!("[::]:{p}") } else { a.to_string() };
            let (local, peer) = (norm_local(f[3]), f[4]);
            let foreign = if proto == "UDP" && peer.ends_with(":*") {
                "*:*".to_string()
            } else if let Some(a) = peer.strip_suffix(":*") {
                format!("{}:0", if a == "*" { "[::]" } else { a })
            } else {
                peer.to_string()
            };
            let state = match (proto, f[0]) {
                ("UDP", _) => "",
                (_, "LISTEN") => "LISTENING",
                (_, "ESTAB") => "ESTABLISHED",
                (_, "SYN-SENT") => "SYN_SENT",
                (_, "TIME-WAIT") => "TIME_WAIT",
                (_, other) => other,
            };
            (proto.to_string(), local, foreign, state.to_string())
        })
        .collect()
}

fn tuples(rows: &[Row]) -> BTreeSet<(String, String, String, String)> {
    rows.iter().map(|r| (r.proto.clone(), r.local.clone(), r.foreign.clone(), r.state.clone())).collect()
}

struct Scene {
    ns: Netns,
    server_pid: String,
    client_pid: String,
    server_name: String,
    client_name: String,
    expected: Vec<Row>,
}

/// Listeners and bound UDP in one process, connections to them from another.
fn scene() -> Scene {
    let mut ns = Netns::new("ano");
    let server_name = tag("nsSrv");
    let client_name = tag("nsCli");
    let s = ns.load(&[
        "hold", "--name", &server_name, "--tcp-listen", "127.0.0.1:7001", "--tcp-listen", "[::1]:7002", "--udp-bind",
        "127.0.0.1:7003", "--udp-bind", "[::]:7004", "--seconds", "60",
    ]);
    let c = ns.load(&[
        "hold", "--name", &client_name, "--tcp-connect", "127.0.0.1:7001", "--tcp-connect", "[::1]:7002",
        "--udp-connect", "127.0.0.1:7003", "--seconds", "60",
    ]);
    let (sp, cp) = (s["pid"].to_string(), c["pid"].to_string());
    let row = |proto: &str, local: &str, foreign: &str, state: &str, pid: &str| Row {
        proto: proto.into(),
        local: local.into(),
        foreign: foreign.into(),
        state: state.into(),
        pid: Some(pid.into()),
        exe: None,
    };
    let tc = c["tcp_connect"].as_array().unwrap();
    let uc = &c["udp_connect"][0];
    let (c4, c6) = (tc[0]["local"].as_str().unwrap(), tc[1]["local"].as_str().unwrap());
    let mut expected = vec![
        row("TCP", "127.0.0.1:7001", "0.0.0.0:0", "LISTENING", &sp),
        row("TCP", "127.0.0.1:7001", c4, "ESTABLISHED", &sp),
        row("TCP", c4, "127.0.0.1:7001", "ESTABLISHED", &cp),
        row("TCP", "[::1]:7002", "[::]:0", "LISTENING", &sp),
        row("TCP", "[::1]:7002", c6, "ESTABLISHED", &sp),
        row("TCP", c6, "[::1]:7002", "ESTABLISHED", &cp),
        row("UDP", "127.0.0.1:7003", "*:*", "", &sp),
        row("UDP", uc["local"].as_str().unwrap(), "127.0.0.1:7003", "", &cp),
        row("UDP", "[::]:7004", "*:*", "", &sp),
    ];
    expected.sort();
    Scene { ns, server_pid: sp, client_pid: cp, server_name, client_name, expected }
}

/// -ano until the server has accepted both connections (an unaccepted
/// socket has no owner yet).
fn ano_settled(ns: &Netns, want: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut r = rows(&ns.netstat(&["-ano"]), true);
        r.sort();
        if (r.len() == want && r.iter().all(|r| r.pid.as_deref() != Some("0"))) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ano_lists_exactly_our_sockets_with_pids_and_agrees_with_ss() {
    let sc = scene();
    let got = ano_settled(&sc.ns, sc.expected.len());
    assert_eq!(got, sc.expected, "netstat -ano in the namespace");

    let mut ss = ss_rows(&sc.ns, "TCP", &[]);
    ss.extend(ss_rows(&sc.ns, "UDP", &[]));
    assert_eq!(tuples(&got), ss, "netstat -ano and ss -tan/-uan disagree");

    // Without -a: established TCP only.
    let active = rows(&sc.ns.netstat(&["-n"]), false);
    assert_eq!(active.len(), 4);
    assert!(active.iter().all(|r| r.proto == "TCP" && r.state == "ESTABLISHED"), "{active:?}");

    // JSON carries the distinctive process names.
    let v = sc.ns.json(&["-ano"]);
    for c in v["connections"].as_array().unwrap() {
        let (pid, process) = (c["pid"].to_string(), c["comm"].as_str().unwrap_or(""));
        let want = if pid == sc.server_pid { &sc.server_name } else { &sc.client_name };
        assert!(pid == sc.server_pid || pid == sc.client_pid, "unexpected owner in {c}");
        assert_eq!(process, want.as_str(), "{c}");
    }
}

#[test]
fn all_udp_ipv4_only_and_agrees_with_ss() {
    let sc = scene();
    ano_settled(&sc.ns, sc.expected.len());
    let got = rows(&sc.ns.netstat(&["-a", "-n", "-o", "-p", "udp"]), true);
    let mut want: Vec<Row> = sc.expected.iter().filter(|r| r.proto == "UDP" && !r.local.starts_with('[')).cloned().collect();
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want, "netstat -a -p udp");
    assert_eq!(tuples(&got), ss_rows(&sc.ns, "UDP", &["-4"]));
}

#[test]
fn executables_are_named_under_each_row() {
    let sc = scene();
    ano_settled(&sc.ns, sc.expected.len());
    let got = rows(&sc.ns.netstat(&["-anob"]), true);
    assert_eq!(got.len(), sc.expected.len());
    for r in &got {
        assert_eq!(r.exe.as_deref(), Some("netstat-load"), "-b line of {r:?}");
    }
    let full = std::fs::canonicalize(LOAD).unwrap();
    let got = rows(&sc.ns.netstat(&["-anbv"]), false);
    for r in &got {
        assert_eq!(r.exe.as_deref(), Some(full.to_str().unwrap()), "-bv line of {r:?}");
    }
}

#[test]
fn routes_the_test_adds_are_listed() {
    let ns = Netns::new("rt");
    ns.ip(&["link", "add", "vrt0", "type", "veth", "peer", "name", "vrt1"]);
    ns.ip(&["link", "set", "vrt0", "up"]);
    ns.ip(&["link", "set", "vrt1", "up"]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "vrt0"]);
    ns.ip(&["-6", "addr", "add", "fd99::1/64", "dev", "vrt0", "nodad"]);
    ns.ip(&["route", "add", "10.123.0.0/16", "via", "10.99.0.2", "metric", "42"]);
    ns.ip(&["-6", "route", "add", "fd98::/48", "via", "fd99::2", "dev", "vrt0", "metric", "77"]);
    let link = String::from_utf8(ns.exec("cat", &["/sys/class/net/vrt0/ifindex"]).stdout).unwrap();
    let mac = String::from_utf8(ns.exec("cat", &["/sys/class/net/vrt0/address"]).stdout).unwrap();
    let (idx, mac) = (link.trim(), mac.trim().replace(':', " "));

    let text = ns.netstat(&["-r"]);
    let lines: Vec<&str> = text.lines().collect();
    let has = |want: &[&str]| lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>() == want);
    assert!(lines.iter().any(|l| l.trim_start().starts_with(&format!("{idx}...{mac} ......vrt0"))), "{text}");
    // The Interface column is the interface's address, as route print shows it.
    assert!(has(&["10.123.0.0", "255.255.0.0", "10.99.0.2", "10.99.0.1", "42"]), "{text}");
    assert!(has(&["10.99.0.0", "255.255.255.0", "On-link", "10.99.0.1", "0"]), "{text}");
    // The local table's routes: the address itself and the subnet's broadcast.
    assert!(has(&["10.99.0.1", "255.255.255.255", "On-link", "10.99.0.1", "0"]), "{text}");
    assert!(has(&["10.99.0.255", "255.255.255.255", "On-link", "10.99.0.1", "0"]), "{text}");
    assert!(has(&[idx, "77", "fd98::/48", "fd99::2"]), "{text}");
    assert!(has(&[idx, "256", "fd99::/64", "On-link"]), "{text}");

    let v = ns.json(&["-r"]);
    let r4 = v["routes"]["ipv4"].as_array().unwrap();
    assert!(r4.iter().any(|r| r["destination"] == "10.123.0.0" && r["gateway"] == "10.99.0.2" && r["metric"] == 42), "{v}");
}

fn tcp_counter(ns: &Netns, name: &str) -> i64 {
    let v = ns.json(&["-s", "-p", "tcp"]);
    v["statistics"][0]["counters"][name].as_i64().unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn statistics_move_by_what_we_did() {
    let mut ns = Netns::new("st");
    let before = (tcp_counter(&ns, "Active Opens"), tcp_counter(&ns, "Passive Opens"));
    const N: i64 = 7;
    let name = tag("nsPair");
    let o = ns.exec(
        LOAD,
        &["pair", "--server-name", &name, "--client-name", &name, "--addr", "127.0.0.1", "--count", &N.to_string(), "--seconds", "20"],
    );
    assert!(o.status.success(), "netstat-load pair: {}", String::from_utf8_lossy(&o.stderr));
    let after = (tcp_counter(&ns, "Active Opens"), tcp_counter(&ns, "Passive Opens"));
    assert_eq!(after.0 - before.0, N, "Active Opens after {N} connects");
    assert_eq!(after.1 - before.1, N, "Passive Opens after {N} accepts");

    // Current Connections is counted from the sockets: one held connection = 2.
    ns.load(&["hold", "--name", &name, "--tcp-listen", "127.0.0.1:7100", "--seconds", "30"]);
    ns.load(&["hold", "--name", &name, "--tcp-connect", "127.0.0.1:7100", "--seconds", "30"]);
    assert_eq!(tcp_counter(&ns, "Current Connections"), 2);
    let text = ns.netstat(&["-s", "-p", "tcp"]);
    // Windows puts TCP's `=` at column 39.
    assert!(text.contains("\nTCP Statistics for IPv4\n") && text.contains(&format!("\n  {:<36}= {}\n", "Active Opens", after.0 + 1)), "{text}");
}

fn iface(v: &Value, name: &str) -> Value {
    v["interface_statistics"]["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("{name} not in {v}")).clone()
}

#[test]
fn interface_bytes_grow_with_traffic_over_the_veth() {
    let a = Netns::new("ea");
    let b = Netns::new("eb");
    a.ip(&["link", "add", "vea", "type", "veth", "peer", "name", "veb", "netns", &b.name]);
    a.ip(&["addr", "add", "10.88.0.1/24", "dev", "vea"]);
    b.ip(&["addr", "add", "10.88.0.2/24", "dev", "veb"]);
    a.ip(&["link", "set", "vea", "up"]);
    b.ip(&["link", "set", "veb", "up"]);
    let rx0 = iface(&b.json(&["-e"]), "veb");
    let tx0 = iface(&a.json(&["-e"]), "vea");
    const SENDS: u64 = 5;
    for _ in 0..SENDS {
        let o = a.exec(LOAD, &["udp", "--name", "nsEthSend", "--sendto", "10.88.0.2:9", "--seconds", "5"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    std::thread::sleep(Duration::from_millis(200));
    let rx1 = iface(&b.json(&["-e"]), "veb");
    let tx1 = iface(&a.json(&["-e"]), "vea");
    let d = |x: &Value, y: &Value, k: &str| y[k].as_u64().unwrap() - x[k].as_u64().unwrap();
    // Each datagram is at least an Ethernet + IPv4 + UDP header (42 bytes).
    assert!(d(&rx0, &rx1, "rx_packets") >= SENDS && d(&rx0, &rx1, "rx_bytes") >= SENDS * 42, "{rx0} -> {rx1}");
    assert!(d(&tx0, &tx1, "tx_packets") >= SENDS && d(&tx0, &tx1, "tx_bytes") >= SENDS * 42, "{tx0} -> {tx1}");

    // The totals block only, as Windows prints it; -v adds one per interface.
    let text = b.netstat(&["-e"]);
    assert!(text.starts_with("Interface Statistics\n\n                           Received            Sent\n"), "{text}");
    assert!(!text.contains("\nInterface veb\n"), "{text}");
    let text = b.netstat(&["-e", "-v"]);
    assert!(text.contains("\nInterface veb\n"), "{text}");
}

/// Names from the namespace's /etc/hosts and /etc/services; an address
/// whose reverse lookup goes to a resolver that never answers is shown as a
/// number after about a second instead of stalling the output.
#[test]
fn names_come_from_hosts_and_services_and_a_dead_resolver_costs_at_most_a_second() {
    let mut ns = Netns::new("rs");
    ns.etc_file("hosts", "10.77.0.1 alpha.example.test alpha\n");
    ns.etc_file("services", "http 80/tcp www\nnsdemo 7002/tcp\n");
    ns.etc_file("resolv.conf", "nameserver 10.77.0.99\noptions timeout:5 attempts:2\n");
    ns.ip(&["link", "add", "vrs0", "type", "veth", "peer", "name", "vrs1"]);
    ns.ip(&["link", "set", "vrs0", "up"]);
    ns.ip(&["link", "set", "vrs1", "up"]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "vrs0"]);
    ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "vrs0"]);
    let name = tag("nsRes");
    ns.load(&["hold", "--name", &name, "--tcp-listen", "10.77.0.1:80", "--tcp-listen", "10.77.0.2:7002", "--seconds", "30"]);
    let c = ns.load(&["hold", "--name", &name, "--tcp-connect", "10.77.0.1:80", "--tcp-connect", "10.77.0.2:7002", "--seconds", "30"]);
    let cport = c["tcp_connect"][0]["local"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    // 10.77.0.2 has no name in hosts: only its reverse lookup asks DNS.
    let dlocal = c["tcp_connect"][1]["local"].as_str().unwrap().to_string();
    let dforeign = format!("alpha:{}", dlocal.rsplit(':').next().unwrap());

    let start = Instant::now();
    let text = ns.netstat(&["-a"]);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "netstat -a took {took:?} with a dead resolver");
    // And it did ask the resolver (which would have kept it 10 s).
    assert!(took >= Duration::from_millis(800), "netstat -a took only {took:?}: no reverse lookup was tried");
    let got: BTreeSet<(String, String, String)> =
        rows(&text, false).into_iter().map(|r| (r.local, r.foreign, r.state)).collect();
    // As in Windows: the local side stays numeric, a listener's foreign
    // address is this machine's name and port 0.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let host = host.split('.').next().unwrap().to_string();
    let listener_foreign = format!("{host}:0");
    let want: BTreeSet<(String, String, String)> = [
        ("10.77.0.1:80", listener_foreign.as_str(), "LISTENING"),
        ("10.77.0.1:80", &format!("alpha:{cport}"), "ESTABLISHED"),
        (&format!("10.77.0.1:{cport}"), "alpha:http", "ESTABLISHED"),
        ("10.77.0.2:7002", listener_foreign.as_str(), "LISTENING"),
        ("10.77.0.2:7002", dforeign.as_str(), "ESTABLISHED"),
        (dlocal.as_str(), "10.77.0.2:nsdemo", "ESTABLISHED"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{text}");

    // -f: fully qualified foreign names.
    let text = ns.netstat(&["-f"]);
    let fq = rows(&text, false);
    assert!(
        fq.iter().any(|r| r.local == format!("10.77.0.1:{cport}") && r.foreign == "alpha.example.test:http"),
        "{text}"
    );
}

/// Listing is read-only and sockets of other namespaces never leak in.
#[test]
fn an_empty_namespace_shows_only_the_header() {
    let ns = Netns::new("empty");
    assert_eq!(
        ns.netstat(&["-ano"]),
        "\nActive Connections\n\n  Proto  Local Address          Foreign Address        State           PID\n"
    );
}

/// A socket of the namespace held by a process outside it (here: this test
/// process, which made the socket from a thread that entered the namespace)
/// still gets its owner: the owner scan falls back to every process.
#[test]
fn owner_outside_the_namespace_is_found() {
    let ns = Netns::new("far");
    let path = format!("/run/netns/{}", ns.name);
    let listener = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        std::net::TcpListener::bind("127.0.0.1:7400").unwrap()
    })
    .join()
    .unwrap();
    let got = rows(&ns.netstat(&["-ano"]), true);
    let me = std::process::id().to_string();
    assert_eq!(
        got,
        vec![Row {
            proto: "TCP".into(),
            local: "127.0.0.1:7400".into(),
            foreign: "0.0.0.0:0".into(),
            state: "LISTENING".into(),
            pid: Some(me),
            exe: None
        }]
    );
    drop(listener);
}
