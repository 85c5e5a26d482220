//! Shared helpers for the kernel tests: run the real `netstat --stream
//! --json` and the `netstat-load` workload, collect and filter events.
#![allow(dead_code)]
pub mod ftrace;
pub mod history;
pub mod loss;
pub mod maps;
pub mod postgres;
pub mod ss;
pub mod schema;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn netstat_bin() -> String {
    std::env::var("NETSTAT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_netstat").to_string())
}

pub fn load_bin() -> String {
    std::env::var("NETSTAT_LOAD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_netstat-load").to_string())
}

/// The backend the suite runs with (the VM matrix sets it per run).
pub fn backend() -> String {
    std::env::var("NETSTAT_TEST_BACKEND").unwrap_or_else(|_| "auto".into())
}

/// An endpoint of netstat's JSON (`{"addr", "port"}`) as `ADDR:PORT`
/// (`[ADDR]:PORT` for IPv6), the way netstat-load prints its own; a string
/// (netstat-load's) is returned as it is. A line with no such field (a
/// stream's `lost` line) gives `(none)`, which matches no endpoint: a test
/// that needed the events lost fails on its own check, not here.
pub fn ep(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_string();
    }
    if v.is_null() {
        return "(none)".to_string();
    }
    let addr = v["addr"].as_str().unwrap_or_else(|| panic!("not an endpoint: {v}"));
    let port = v["port"].as_u64().unwrap_or_else(|| panic!("not an endpoint: {v}"));
    if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") }
}

/// A unique, distinctive process name (comm holds 15 bytes): the prefix,
/// this test process's PID and a per-call number, so two calls never give
/// the same name. The prefix is what gets shortened, never the number.
pub fn name(prefix: &str) -> String {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let suffix = format!("{}-{call}", std::process::id() % 10000);
    let mut keep = prefix.len().min(15usize.saturating_sub(suffix.len()));
    while !prefix.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &prefix[..keep])
}

/// A running `netstat --stream --json`, its events collected by a thread.
pub struct Stream {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    /// Lines that were not JSON (a SIGKILL may cut the last one short).
    bad: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl Stream {
    pub fn start(extra: &[&str]) -> Stream {
        Stream::start_with_backend(&backend(), extra)
    }

    /// `start` with a backend of the test's choosing instead of the suite's.
    pub fn start_with_backend(backend: &str, extra: &[&str]) -> Stream {
        let mut cmd = Command::new(netstat_bin());
        cmd.args(["--stream", "--json", "--backend", backend]).args(extra);
        Stream::spawn(cmd)
    }

    /// A stream from a command of the test's making (e.g. netstat under
    /// setpriv); it must run `netstat --stream --json` in this process id.
    pub fn spawn(mut cmd: Command) -> Stream {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn netstat --stream");
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let ev = events.clone();
        let bad = Arc::new(Mutex::new(Vec::new()));
        let bad_lines = bad.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        // Every line must be a valid event or loss of schema 1.
                        let errs = schema::errors(&v, schema::stream_def(&v));
                        if !errs.is_empty() {
                            bad_lines.lock().unwrap().push(format!("schema: {errs:?}: {line}"));
                        }
                        ev.lock().unwrap().push(v)
                    }
                    Err(e) => bad_lines.lock().unwrap().push(format!("{e}: {line:?}")),
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        let mut s = Stream { child, events, bad, reader: Some(reader), stderr: Some(stderr) };
        s.wait_ready();
        s
    }

    /// Attaching takes a moment: make marked UDP binds until one is seen.
    fn wait_ready(&mut self) {
        let marker = name("ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let err = self.stderr.take().unwrap().join().unwrap();
                panic!("netstat --stream exited early ({status}): {err}");
            }
            let _ = Command::new(load_bin())
                .args(["udp", "--name", &marker, "--bind", "127.0.0.1:0"])
                .stdout(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
            if self.events().iter().any(|e| e["comm"] == marker.as_str()) {
                return;
            }
        }
        panic!("netstat --stream saw none of our marker events within 60 s");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` and carry on (SIGSTOP/SIGCONT a consumer).
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0, "kill({signal})");
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Wait until `pred` holds over the events so far (or time out).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.events.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pred(&self.events.lock().unwrap())
    }

    /// Stop with `signal`, return (exit status, all events, stderr).
    pub fn stop_with(mut self, signal: i32) -> (std::process::ExitStatus, Vec<Value>, String) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("netstat did not exit within 15 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.reader.take().unwrap().join().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        let bad = self.bad.lock().unwrap().clone();
        let allowed = if signal == libc::SIGKILL { 1 } else { 0 };
        assert!(bad.len() <= allowed, "netstat printed lines that are not JSON of schema 1: {bad:?}");
        if signal == libc::SIGKILL {
            assert!(!bad.iter().any(|b| b.starts_with("schema:")), "lines off the schema: {bad:?}");
        }
        let events = self.events.lock().unwrap().clone();
        (status, events, err)
    }

    pub fn stop(self) -> Vec<Value> {
        let (status, events, err) = self.stop_with(libc::SIGTERM);
        assert!(status.success(), "netstat --stream exited with {status}: {err}");
        events
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `netstat-load ARGS`, return its JSON output lines.
pub fn load(args: &[&str]) -> Vec<Value> {
    let out = Command::new(load_bin()).args(args).output().expect("run netstat-load");
    assert!(
        out.status.success(),
        "netstat-load {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("netstat-load printed non-JSON {l:?}: {e}")))
        .collect()
}

pub fn pid_of(v: &Value) -> u32 {
    v["pid"].as_u64().expect("pid") as u32
}

/// Events about one connection seen from one end, in order.
pub fn for_tuple<'a>(events: &'a [Value], local: &str, remote: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| ep(&e["local"]) == local && ep(&e["remote"]) == remote)
        .collect()
}

/// Show the events that came closest, for a failure message.
pub fn closest(events: &[Value], needle: &str) -> String {
    let port = needle.rsplit(':').next().unwrap_or(needle).to_string();
    let near: Vec<String> = events
        .iter()
        .filter(|e| {
            Some(ep(&e["local"])).is_some_and(|l| l.ends_with(&format!(":{port}")))
                || Some(ep(&e["remote"])).is_some_and(|r| r.ends_with(&format!(":{port}")))
        })
        .take(20)
        .map(|e| e.to_string())
        .collect();
    if near.is_empty() {
        format!("no event mentions port {port}; {} events in all", events.len())
    } else {
        near.join("\n")
    }
}

/// An event's `time` as ns since the epoch (UTC, RFC 3339 with ns).
pub fn time_ns(e: &Value) -> i128 {
    let t = e["time"].as_str().unwrap_or_else(|| panic!("no time: {e}"));
    let num = |r: std::ops::Range<usize>| -> i128 { t[r].parse().unwrap_or_else(|_| panic!("bad time {t:?}")) };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    let secs = days * 86400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    secs * 1_000_000_000 + num(20..29)
}

/// The current CLOCK_REALTIME in ns, comparable with `time_ns`.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
}

/// The port of an `ADDR:PORT` string.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("not ADDR:PORT: {addr}"))
}

pub fn transition(e: &Value) -> String {
    format!("{}->{}", e["old_state"].as_str().unwrap_or("?"), e["new_state"].as_str().unwrap_or("?"))
}

/// A network namespace of our own (loopback up), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("nst-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ok = Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add").success();
        assert!(ok, "ip netns add {name} failed");
        let ns = Netns { name };
        assert!(ns.cmd("ip", &["link", "set", "lo", "up"]).status().unwrap().success());
        ns
    }

    /// The namespace's inode: what netstat reports as an event's `netns`.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name)).expect("stat /run/netns/NAME").ino()
    }

    /// `ip netns exec NAME prog args...`
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]).args(args);
        c
    }

    /// `netstat-load ARGS` inside the namespace, its JSON lines.
    pub fn load(&self, args: &[&str]) -> Vec<Value> {
        let out = self.cmd(&load_bin(), args).output().expect("run netstat-load");
        assert!(out.status.success(), "netstat-load {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A running program whose stdout is collected as it comes (raw bytes, so
/// tests can check the output is valid UTF-8; lines read lossily).
pub struct Lines {
    pub child: Child,
    raw: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Lines {
    pub fn spawn(mut cmd: Command) -> Lines {
        use std::io::Read;
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
        let mut out = child.stdout.take().unwrap();
        let raw = Arc::new(Mutex::new(Vec::new()));
        let sink = raw.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Lines { child, raw, reader: Some(reader) }
    }

    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).lines().map(str::to_string).collect()
    }

    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.lines()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGTERM, wait, and return (exit status, everything printed).
    pub fn stop_raw(mut self) -> (std::process::ExitStatus, Vec<u8>) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let raw = self.raw.lock().unwrap().clone();
        (status, raw)
    }

    pub fn stop(self) -> Vec<String> {
        let (_, raw) = self.stop_raw();
        String::from_utf8_lossy(&raw).lines().map(str::to_string).collect()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The documents of a live table (`netstat -ano N --json`) among its lines.
pub fn displays(lines: &[String]) -> Vec<Value> {
    lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v.get("connections").is_some()).collect()
}
