//! Driving the `netstat-load` workloads: `hold-many` (N established loopback
//! connections, held until dropped), `churn` (connections opened and
//! closed as fast as, or at the rate, asked) and `talk` (held connections
//! exchanging echoed messages). Reads their one-line JSON reports; measures
//! nothing itself.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::options::Bins;

/// State changes plus the accept event per loopback connection (issue 6).
pub const EVENTS_PER_CONN: u64 = 11;

/// `netstat-load hold-many`, running until dropped.
pub struct Held {
    child: Child,
    pub setup_ms: u64,
    /// TCP sockets on the machine besides the 2N held ones (others' work).
    pub others: u64,
}

impl Held {
    pub fn start(bins: &Bins, n: u64) -> Result<Held> {
        let mut child = Command::new(&bins.load)
            .args(["hold-many", "--name", "bench-hold", "--connections", &n.to_string(), "--seconds", "1200"])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting netstat-load hold-many")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let ready = json_line(&line).filter(|v| v["ready"] == true);
        let Some(ready) = ready else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("netstat-load hold-many {n} did not get ready: {line:?}");
        };
        let setup_ms = json_u64(&ready, "setup_ms").unwrap_or(0);
        // Let the accept queues and timers settle before timing anything.
        thread::sleep(Duration::from_secs(1));
        Ok(Held { child, setup_ms, others: 0 })
    }

    /// Why the holder is no longer running, if it is not.
    pub fn gone(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(format!("the connection holder (netstat-load hold-many) exited early: {s}")),
            _ => None,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The holders reset their connections (SO_LINGER 0); give the kernel a moment.
        thread::sleep(Duration::from_secs(1));
    }
}

/// TCP sockets that are not the 2N we hold (from `ss -tan`'s line count).
pub fn other_tcp_sockets(held: u64) -> u64 {
    Command::new("ss")
        .arg("-tan")
        .output()
        .map(|o| (o.stdout.iter().filter(|c| **c == b'\n').count() as u64).saturating_sub(1 + 2 * held))
        .unwrap_or(0)
}

/// One churn run's outcome.
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Churn {
    pub connections: u64,
    pub rate: f64,
    pub errors: u64,
    /// The addresses its servers listened on.
    pub listeners: Vec<String>,
}

impl Churn {
    /// From the report line `netstat-load churn` ends with.
    fn from_line(line: &str) -> Result<Churn> {
        let v = json_line(line).with_context(|| format!("churn printed no JSON report: {line:?}"))?;
        Ok(Churn {
            connections: json_u64(&v, "connections").context("churn printed no count")?,
            rate: v["rate"].as_f64().unwrap_or(0.0),
            errors: json_u64(&v, "errors").unwrap_or(0),
            listeners: v["listeners"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(String::from)).collect(),
        })
    }
}

pub fn churn(bins: &Bins, seconds: u64, rate: u64, processes: u32) -> Result<Churn> {
    let out = Command::new(&bins.load)
        .args(["churn", "--name", "bench-churn", "--processes", &processes.to_string(), "--seconds", &seconds.to_string()])
        .args(["--rate", &rate.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running netstat-load churn")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    if !out.status.success() {
        bail!("netstat-load churn failed ({}): {line}", out.status);
    }
    Churn::from_line(line)
}

/// One talk run's outcome.
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Talk {
    pub messages: u64,
    pub rate: f64,
    /// CPU seconds of the client and server processes together.
    pub cpu: f64,
    /// Every connection sent all its messages before the deadline.
    pub complete: bool,
}

impl Talk {
    fn from_line(line: &str) -> Result<Talk> {
        let v = json_line(line).with_context(|| format!("talk printed no JSON report: {line:?}"))?;
        Ok(Talk {
            messages: json_u64(&v, "messages").context("talk printed no count")?,
            rate: v["rate"].as_f64().unwrap_or(0.0),
            cpu: v["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
            complete: v["complete"] == true,
        })
    }
}

/// `netstat-load talk`: `connections` held connections, each sending
/// `messages` echoed messages of `size` bytes, for at most `seconds`.
pub fn talk(bins: &Bins, connections: u32, messages: u64, size: usize, seconds: u64) -> Result<Talk> {
    let out = Command::new(&bins.load)
        .args(["talk", "--name", "bench-talk", "--connections", &connections.to_string()])
        .args(["--messages", &messages.to_string(), "--size", &size.to_string(), "--seconds", &seconds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running netstat-load talk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    if !out.status.success() {
        bail!("netstat-load talk failed ({}): {line}", out.status);
    }
    Talk::from_line(line)
}

/// A JSON object line, or None.
fn json_line(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line.trim()).ok().filter(Value::is_object)
}

/// A whole-number field (written as an integer or a float).
fn json_u64(v: &Value, key: &str) -> Option<u64> {
    let f = &v[key];
    f.as_u64().or_else(|| f.as_f64().filter(|x| *x >= 0.0).map(|x| x as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_report_is_read_with_serde() {
        let l = r#"{"connections":112490,"errors":0,"listeners":["127.0.0.1:5"],"rate":37491.0,"time":"2026-11-23T22:28:12Z"}"#;
        let want = Churn { connections: 112490, rate: 37491.0, errors: 0, listeners: vec!["127.0.0.1:5".into()] };
        assert_eq!(Churn::from_line(l).unwrap(), want);
        assert!(Churn::from_line(r#"{"rate":1.0}"#).is_err());
        assert!(Churn::from_line("garbage").is_err());
        let t = r#"{"bytes":6400000,"complete":true,"connections":50,"cpu_seconds":0.86,"messages":100000,"rate":176108.0,"seconds":0.568,"size":64}"#;
        assert_eq!(Talk::from_line(t).unwrap(), Talk { messages: 100000, rate: 176108.0, cpu: 0.86, complete: true });
        let v = json_line(r#"{"ready":true,"setup_ms":12.0}"#).unwrap();
        assert_eq!(json_u64(&v, "setup_ms"), Some(12));
        assert_eq!(json_u64(&v, "missing"), None);
    }
}
