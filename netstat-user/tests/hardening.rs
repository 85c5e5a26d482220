//! Hostile input and privileges: terminal escapes in process names never
//! reach the terminal, floods are counted, minimal capabilities suffice.
//! vm: one backend (escaping, floods and capabilities are user space's; the hooks' mechanism is probe_plan's)
mod support;

use std::{process::Command, time::Duration};

use support::*;

const EVIL: &str = "\x1b[31mevil\n";

#[test]
fn hostile_comm_is_escaped_in_text_and_json() {
    let be = backend();
    for json in [false, true] {
        let mut cmd = Command::new(netstat_bin());
        cmd.args(["--stream", "--backend", be.as_str(), "--duration", "30"]);
        if json {
            cmd.arg("--json");
        }
        let stream = Lines::spawn(cmd);
        let mentions = |l: &str, pid: u32| l.contains(&format!(" {pid} ")) || l.contains(&format!(":{pid},"));
        // Repeat until the tracer (still attaching at first) shows the process.
        let mut pid = 0;
        for _ in 0..100 {
            let out = load(&["udp", "--name", EVIL, "--bind", "127.0.0.1:0"]);
            pid = pid_of(out.iter().find(|v| v.get("pid").is_some()).unwrap());
            if stream.wait_for(Duration::from_millis(200), |ls| ls.iter().any(|l| mentions(l, pid))) {
                break;
            }
        }
        let (status, raw) = stream.stop_raw();
        assert!(status.success());
        let text = String::from_utf8(raw).expect("output is valid UTF-8");
        let line = text
            .lines()
            .find(|l| mentions(l, pid) && l.contains("evil"))
            .unwrap_or_else(|| panic!("no event from the hostile process {pid} (json={json}):\n{text}"));
        assert!(!text.contains('\x1b'), "a raw ESC reached the output (json={json})");
        for c in text.chars() {
            assert!(c == '\n' || !c.is_control(), "control character {c:?} in output (json={json})");
        }
        if json {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["comm"], "\\x1b[31mevil\\n", "{line}");
        } else {
            assert!(line.contains("\\x1b[31mevil\\n"), "{line}");
        }
    }
}

/// Sets a sysctl for the test's duration and puts the old value back when
/// dropped, on a panic too.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::fs::write(path, value).unwrap_or_else(|e| panic!("writing {value} to {path}: {e}"));
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, self.old.trim()) {
            eprintln!("could not restore {} to {}: {e}", self.path, self.old.trim());
        }
    }
}

/// README's capabilities, and nothing else, trace real connections: netstat
/// runs as uid nobody under setpriv with exactly those capabilities, and the
/// events of a workload it cannot see in /proc as its own (TCP connections
/// both ends, a UDP send) must arrive with the right pid and comm.
///
/// Debian kernels add perf_event_paranoid=3, where perf events (the syscall
/// tracepoints behind tcp_accept and udp_connect) need CAP_SYS_ADMIN whatever
/// CAP_PERFMON says: README's list is then not enough, by the host's choice.
/// The test lowers the sysctl to 2 for its run (restored on drop, panics
/// included) rather than failing there, because what it checks is that the
/// list is complete on a kernel that honours CAP_PERFMON; failing would
/// only say the host's policy is stricter, and would turn the VM suite
/// (Debian kernels) red for a reason no change to netstat can fix.
#[test]
fn minimal_capabilities_are_enough_to_trace() {
    let path = "/proc/sys/kernel/perf_event_paranoid";
    let paranoid: i32 = std::fs::read_to_string(path).ok().and_then(|v| v.trim().parse().ok()).expect("perf_event_paranoid");
    let _restore = (paranoid > 2).then(|| Sysctl::set(path, "2"));
    let caps = "+bpf,+perfmon,+net_admin,+sys_ptrace,+dac_read_search";
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(netstat_bin())
        .args(["--stream", "--json", "--backend", &backend()]);
    let stream = Stream::spawn(cmd);
    let status = std::fs::read_to_string(format!("/proc/{}/status", stream.pid())).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "the stream does not run as nobody:\n{status}");

    let (srv, cli, udp) = (name("mcsrv"), name("mccli"), name("mcudp"));
    let out = load(&["pair", "--server-name", &srv, "--client-name", &cli, "--addr", "127.0.0.1", "--count", "3"]);
    let server_pid = out.iter().find(|v| v["role"] == "server").map(pid_of).unwrap();
    let client_pid = out.iter().find(|v| v["role"] == "client").map(pid_of).unwrap();
    let conns: Vec<(String, String)> = out.iter().filter(|v| v.get("conn").is_some()).map(|v| (ep(&v["local"]), ep(&v["remote"]))).collect();
    let sent = load(&["udp", "--name", &udp, "--sendto", "127.0.0.1:9"]);
    let udp_pid = sent.iter().find(|v| v.get("pid").is_some()).map(pid_of).unwrap();
    let udp_port = port_of(sent.iter().find_map(|v| v["local"].as_str()).unwrap());
    let closed = |ev: &[serde_json::Value], l: &str, r: &str| ev.iter().any(|e| ep(&e["local"]) == l && ep(&e["remote"]) == r && e["new_state"] == "CLOSED");
    stream.wait_for(Duration::from_secs(10), |ev| {
        conns.iter().all(|(l, r)| closed(ev, l, r) && closed(ev, r, l)) && ev.iter().any(|e| e["comm"] == udp.as_str() && e["type"] == "udp_close")
    });
    let events = stream.stop();

    for (l, r) in &conns {
        let ends = [(l, r, client_pid, &cli, &loss::CLIENT[1..]), (r, l, server_pid, &srv, &loss::SERVER[..])];
        for (a, b, pid, comm, want) in ends {
            let got = for_tuple(&events, a, b);
            let states: Vec<String> = got.iter().filter(|e| e["type"] == "tcp_state").map(|e| transition(e)).collect();
            assert_eq!(states, want, "as nobody with {caps}: {a} -> {b}\n{}", closest(&events, a));
            for e in &got {
                assert!(e["pid"] == pid && e["comm"] == comm.as_str(), "{a} -> {b} attributed wrongly (want {pid} {comm}): {e}");
            }
        }
        let accepts = for_tuple(&events, r, l).into_iter().filter(|e| e["type"] == "tcp_accept").count();
        assert_eq!(accepts, 1, "tcp_accept of {r} <- {l} as nobody with {caps}\n{}", closest(&events, l));
        assert!(
            events.iter().any(|e| transition(e) == "CLOSED->SYN_SENT" && ep(&e["remote"]) == *r && e["pid"] == client_pid && e["comm"] == cli.as_str()),
            "no attributed connect to {r}"
        );
    }
    let u: Vec<&serde_json::Value> = events.iter().filter(|e| e["proto"] == "udp" && e["local"]["port"] == udp_port).collect();
    let kinds: Vec<&str> = u.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["udp_bind", "udp_close"], "the UDP send as nobody with {caps}: {u:?}");
    assert!(u.iter().all(|e| e["pid"] == udp_pid && e["comm"] == udp.as_str()), "{u:?}");
    assert_eq!(u[0]["implicit"], true, "{}", u[0]);
}

/// A small ring under several churning processes: what is not delivered is
/// counted, and --fail-on-loss turns a loss into exit status 3. This one
/// checks the total only (other processes' losses count too); each
/// connection's own accounting is `tracer_lifecycle`'s tiny-ring test. A
/// per-connection version of this flood (in a namespace of its own) found
/// about 14 of 936,000 events neither delivered nor counted in one run of
/// three under parallel tests: a lead for the tracer-cost work, not yet a
/// test that passes reliably.
#[test]
fn flood_is_delivered_or_counted_and_fail_on_loss_reports_it() {
    // A small ring under several churning processes: whatever is lost is
    // counted, and --fail-on-loss turns that into exit status 3.
    let stream = Stream::start(&["--ring-size", "16384", "--fail-on-loss"]);
    let who = name("fl");
    let out = load(&["churn", "--name", &who, "--addr", "127.0.0.1", "--processes", "3", "--seconds", "3"]);
    let made = out.last().and_then(|v| v["connections"].as_u64()).expect("churn summary");
    std::thread::sleep(Duration::from_millis(500));
    let (status, events, err) = stream.stop_with(libc::SIGTERM);
    let lost: u64 = events.iter().filter(|e| e["type"] == "lost").map(|e| e["count"].as_u64().unwrap()).sum();
    let srv = format!("{who}-srv");
    let seen = events
        .iter()
        .filter(|e| e["type"] == "tcp_state" && (e["comm"] == who.as_str() || e["comm"] == srv.as_str()))
        .count() as u64;
    // Each connection makes 10 transitions (client 5, server 5).
    assert!(made > 100, "churn made only {made} connections");
    assert!(seen + lost >= made * 10, "seen {seen} + lost {lost} < {} transitions of {made} connections", made * 10);
    if lost > 0 {
        assert_eq!(status.code(), Some(3), "--fail-on-loss with {lost} lost: status {status}, stderr {err}");
        assert!(err.contains("lost"), "stderr should say events were lost: {err}");
    } else {
        assert!(status.success(), "{status}: {err}");
    }
}

/// BPF program ids held by `pid` (from /proc/PID/fdinfo).
fn programs_of(pid: u32) -> std::collections::HashSet<u64> {
    let mut ids = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        ids.extend(text.lines().filter_map(|l| l.strip_prefix("prog_id:")).filter_map(|v| v.trim().parse::<u64>().ok()));
    }
    ids
}

fn loaded_program_ids() -> std::collections::HashSet<u64> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().filter_map(|p| p["id"].as_u64()).collect()
}

#[test]
fn a_panic_leaves_nothing_attached() {
    let child = Command::new(netstat_bin())
        .args(["--stream", "--backend", &backend()])
        .env("NETSTAT_TEST_PANIC_AFTER_MS", "3000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Loading takes a while on a slow (emulated) CPU; the panic comes 3 s
    // after everything is attached.
    let mut ours = std::collections::HashSet::new();
    for _ in 0..600 {
        ours = programs_of(pid);
        if ours.len() >= 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ours.len() >= 8, "programs never loaded: {ours:?}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(101), "expected a panic exit: {}", String::from_utf8_lossy(&out.stderr));
    let mut left = ours.clone();
    for _ in 0..50 {
        left = loaded_program_ids().intersection(&ours).copied().collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left.is_empty(), "programs still loaded after the panic: {left:?}");
}

/// A stream with `env` set: TCP still traced (owner attributed), and one
/// warning line for each hook that had to be skipped.
fn degrades(env: (&str, &str), skipped: &[&str]) {
    let mut cmd = Command::new(netstat_bin());
    cmd.args(["--stream", "--json", "--backend", "tracepoint", "--duration", "150"]).env(env.0, env.1);
    let lines = Lines::spawn({
        cmd.stderr(std::process::Stdio::piped());
        cmd
    });
    let (srv, cli) = (name("dsrv"), name("dcli"));
    let mut seen = false;
    // Loading every program takes a while in an emulated guest: retry the
    // scene until it is seen, for at most 90 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::time::Instant::now() < deadline {
        load(&["pair", "--server-name", &srv, "--client-name", &cli, "--addr", "127.0.0.1", "--count", "2"]);
        if lines.wait_for(Duration::from_millis(300), |l| l.iter().any(|x| x.contains(&srv) && x.contains("SYN_RECEIVED"))) {
            seen = true;
            break;
        }
    }
    let mut child_err = String::new();
    let mut lines = lines;
    if let Some(mut e) = lines.child.stderr.take() {
        unsafe { libc::kill(lines.child.id() as i32, libc::SIGTERM) };
        use std::io::Read;
        let _ = e.read_to_string(&mut child_err);
    }
    let _ = lines.stop();
    assert!(seen, "with {}={} TCP transitions were not traced; stderr: {child_err}", env.0, env.1);
    for hook in skipped {
        assert!(
            child_err.lines().any(|l| l.contains(&format!("warning: {hook} not traced"))),
            "no warning for {hook} with {}={}: {child_err}",
            env.0,
            env.1
        );
    }
}

#[test]
fn unmounted_tracefs_degrades_to_what_still_works() {
    degrades(("NETSTAT_TRACEFS", "/nonexistent/tracefs"), &["tcp_accept", "udp_connect"]);
}

#[test]
fn missing_tracepoints_degrade_to_what_still_works() {
    let fake = std::env::temp_dir().join(format!("fake-tracefs-{}", std::process::id()));
    std::fs::create_dir_all(fake.join("events/sock")).unwrap();
    degrades(("NETSTAT_TRACEFS", fake.to_str().unwrap()), &["tcp_accept", "udp_connect"]);
    let _ = std::fs::remove_dir_all(&fake);
}

#[test]
fn cgroup_v1_only_host_degrades_to_what_still_works() {
    degrades(("NETSTAT_CGROUP2", "/nonexistent/cgroup2"), &["udp_bind", "udp_connect", "udp_implicit_bind", "udp_close"]);
}

#[test]
fn unprivileged_snapshot_still_works_and_says_why_tracing_does_not() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(netstat_bin())
        .arg("-an")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "unprivileged -an failed: {err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Active Connections"));
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains("tracing unavailable") && err.contains("CAP_BPF"), "{err}");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let ok = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

#[test]
fn an_unreadable_proc_table_costs_its_rows_not_the_display() {
    let dir = std::env::temp_dir().join(format!("fx-unreadable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/basic"), &dir);
    // A table that cannot be read (a directory where the file should be).
    std::fs::remove_file(dir.join("proc/net/udp")).unwrap();
    std::fs::create_dir(dir.join("proc/net/udp")).unwrap();
    let out = Command::new(netstat_bin())
        .args(["-ano", "--proc-root"])
        .arg(dir.join("proc"))
        .arg("--sys-root")
        .arg(dir.join("sys"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}");
    assert!(text.contains("LISTENING") && text.contains("ESTABLISHED"), "the readable tables are gone:\n{text}");
    assert_eq!(err.lines().count(), 1, "one line saying why: {err}");
    assert!(err.contains("net/udp"), "{err}");
}

#[test]
fn hostile_host_names_are_escaped() {
    let ns = Netns::new("hosts");
    let etc = std::path::PathBuf::from(format!("/etc/netns/{}", ns.name));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("hosts"), "127.0.0.1 \x1b]0;pwned\x07evil\x1b[2Jhost\n").unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _c = Cleanup(etc);
    let hold = Lines::spawn(ns.cmd(&load_bin(), &["hold", "--name", &name("hh"), "--tcp-listen", "127.0.0.1:7100", "--tcp-connect", "127.0.0.1:7100", "--seconds", "30"]));
    assert!(hold.wait_for(Duration::from_secs(10), |l| l.iter().any(|x| x.contains("ready"))), "hold never ready");
    let out = ns.cmd(&netstat_bin(), &["-a", "-f", "--no-trace"]).output().unwrap();
    drop(hold);
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("evil"), "the hosts name was not used:\n{text}");
    for c in text.chars() {
        assert!(c == '\n' || !c.is_control(), "control character {c:?} reached the output:\n{text}");
    }
    assert!(text.contains("\\x1b]0;pwned\\x07evil"), "not shown escaped:\n{text}");
}

#[test]
fn stream_memory_stays_flat_under_a_flood() {
    let stream = Stream::start(&[]);
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
    };
    let before = rss(stream.pid());
    load(&["churn", "--name", &name("mf"), "--addr", "127.0.0.1", "--processes", "2", "--seconds", "4"]);
    let after = rss(stream.pid());
    let events = stream.stop();
    assert!(events.len() > 2_000, "the flood produced only {} events", events.len());
    assert!(after < before + 16 * 1024, "RSS grew from {before} kB to {after} kB under the flood");
}
