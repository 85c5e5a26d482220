//! The tracers measured against each other: `netstat --stream --json` and
//! bpftrace scripts from bench/. Starts one, waits until its programs are
//! attached, stops it and reads what it said it lost.
use std::{
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{
    options::Bins,
    process::{collect, stop},
};

/// A tracer running beside a workload.
pub struct Tracer {
    pub child: Child,
    stderr: Option<thread::JoinHandle<String>>,
}

#[derive(Clone, Copy, PartialEq)]
pub enum TracerKind {
    Netstat { ring: Option<u64> },
    /// `netstat --stream` (text lines).
    NetstatText,
    /// `netstat -ano INTERVAL` (the live table), with `--json` or not.
    Live { interval: u8, json: bool },
    Bpftrace(&'static str),
}

impl Tracer {
    /// Start with stdout to /dev/null (or piped, for latency), and wait until
    /// its programs are attached: BPF link and perf-event fds stop appearing.
    pub fn start(bins: &Bins, kind: TracerKind, stdout: Stdio) -> Result<Tracer, String> {
        let mut cmd = match kind {
            TracerKind::Netstat { ring } => {
                let mut c = Command::new(&bins.netstat);
                c.args(["--stream", "--json"]);
                if let Some(r) = ring {
                    c.args(["--ring-size", &r.to_string()]);
                }
                c
            }
            TracerKind::NetstatText => {
                let mut c = Command::new(&bins.netstat);
                c.arg("--stream");
                c
            }
            TracerKind::Live { interval, json } => {
                let mut c = Command::new(&bins.netstat);
                c.args(["-ano", &interval.to_string()]);
                if json {
                    c.arg("--json");
                }
                c
            }
            TracerKind::Bpftrace(script) => {
                let mut c = Command::new("bpftrace");
                c.arg(crate::root().join("bench").join(script));
                c
            }
        };
        let mut child = cmd.stdout(stdout).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
        let stderr = Some(collect(child.stderr.take().unwrap()));
        let mut t = Tracer { child, stderr };
        let fd_dir = format!("/proc/{}/fd", t.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut last, mut stable_since) = (0usize, Instant::now());
        while Instant::now() < deadline {
            if let Ok(Some(s)) = t.child.try_wait() {
                let err = t.stderr.take().unwrap().join().unwrap_or_default();
                return Err(format!("exited at start with {s}: {}", err.lines().next().unwrap_or("").trim()));
            }
            let attached = fs::read_dir(&fd_dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| fs::read_link(e.path()).ok())
                        .filter(|l| {
                            let l = l.to_string_lossy();
                            l.contains("bpf_link") || l.contains("bpf-link") || l.contains("perf_event")
                        })
                        .count()
                })
                .unwrap_or(0);
            if attached != last {
                (last, stable_since) = (attached, Instant::now());
            } else if attached > 0 && stable_since.elapsed() > Duration::from_millis(700) {
                return Ok(t);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err("programs not attached within 60 s".into())
    }

    /// Stop it; returns (events lost as it reported them, its stderr).
    pub fn finish(mut self) -> (u64, String) {
        // Let it drain what the kernel already queued.
        thread::sleep(Duration::from_millis(500));
        stop(&mut self.child);
        let err = self.stderr.take().unwrap().join().unwrap_or_default();
        (lost_in(&err), err)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events a tracer said it lost: netstat's "N kernel events lost", bpftrace's "Lost N events".
fn lost_in(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.windows(3).find_map(|x| match x {
                [n, "kernel", "events"] => n.parse::<u64>().ok(),
                ["Lost", n, "events"] => n.parse::<u64>().ok(),
                _ => None,
            })
        })
        .sum()
}

pub fn tracer_label(k: TracerKind) -> String {
    match k {
        TracerKind::Netstat { ring: None } => "netstat --stream --json >/dev/null".into(),
        TracerKind::Netstat { ring: Some(r) } => format!("netstat --stream --json --ring-size {r} >/dev/null"),
        TracerKind::NetstatText => "netstat --stream >/dev/null".into(),
        TracerKind::Live { interval, json: false } => format!("netstat -ano {interval}"),
        TracerKind::Live { interval, json: true } => format!("netstat -ano {interval} --json"),
        TracerKind::Bpftrace(s) => format!("bpftrace bench/{s} >/dev/null"),
    }
}

/// Default ring size of `netstat --stream`, from its help text.
pub fn default_ring(bins: &Bins) -> Option<u64> {
    let out = Command::new(&bins.netstat).arg("--help").output().ok()?;
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let line = help.lines().find(|l| l.contains("--ring-size"))?;
    line.split("[default: ").nth(1)?.split(']').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_read_from_either_tracer() {
        assert_eq!(lost_in("netstat: 1234 kernel events lost (ring buffer 4096 bytes; raise --ring-size)\n"), 1234);
        assert_eq!(lost_in("Lost 10 events\nLost 5 events\n"), 15);
        assert_eq!(lost_in("Attaching 1 probe...\n"), 0);
    }
}
