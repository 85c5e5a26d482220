//! The kernel's own record of TCP state changes, as an independent witness:
//! ftrace (tracefs, no BPF) on the same `sock:inet_sock_set_state`
//! tracepoint, in a trace instance of its own, filtered to one local port.
//! Each record names the task that was current when the kernel changed the
//! state (for a change made by close() or shutdown(), the caller).
//! The instance is removed on drop, also on a panic.
use std::{fs, path::PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENT: &str = "events/sock/inet_sock_set_state";

/// One state change as ftrace printed it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The current task's ID (a thread ID; the PID of a one-thread process).
    pub tid: u32,
    pub dport: u16,
    /// netstat's names (`LAST_ACK`, `FIN_WAIT_1`, `CLOSED`, ...).
    pub old: String,
    pub new: String,
}

pub struct StateTrace {
    dir: PathBuf,
}

fn write(path: &PathBuf, what: &str) {
    fs::write(path, what).unwrap_or_else(|e| panic!("write {what:?} to {}: {e}", path.display()));
}

/// The kernel's TCP_* name as netstat prints the state.
fn state_name(kernel: &str) -> String {
    match kernel.strip_prefix("TCP_").unwrap_or(kernel) {
        "FIN_WAIT1" => "FIN_WAIT_1".into(),
        "FIN_WAIT2" => "FIN_WAIT_2".into(),
        "CLOSE" => "CLOSED".into(),
        "SYN_RECV" => "SYN_RECEIVED".into(),
        "LISTEN" => "LISTENING".into(),
        other => other.into(),
    }
}

/// `TASK-TID [CPU] FLAGS TIME: inet_sock_set_state: family=... sport=N ...`
fn parse(line: &str) -> Option<Change> {
    let (head, rest) = line.split_once(": inet_sock_set_state: ")?;
    let task = head[..head.rfind('[')?].trim();
    let tid = task.rsplit_once('-')?.1.parse().ok()?;
    let field = |k: &str| rest.split_whitespace().find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
    Some(Change {
        tid,
        dport: field("dport")?.parse().ok()?,
        old: state_name(field("oldstate")?),
        new: state_name(field("newstate")?),
    })
}

impl StateTrace {
    /// Start recording every state change of sockets whose local port is
    /// `port`. Panics with one line when tracefs is not mounted.
    pub fn start(port: u16) -> StateTrace {
        assert!(
            std::path::Path::new(TRACEFS).join(EVENT).exists(),
            "{TRACEFS}/{EVENT} missing: tracefs not mounted (cargo xtask test mounts it)"
        );
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!("{TRACEFS}/instances/netstat-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let t = StateTrace { dir };
        write(&t.dir.join("buffer_size_kb"), "8192");
        write(&t.dir.join(EVENT).join("filter"), &format!("sport == {port}"));
        write(&t.dir.join(EVENT).join("enable"), "1");
        t
    }

    /// Stop and return what was recorded. Panics when the buffer overran
    /// (a record lost would make a witness that is wrong).
    pub fn stop(&self) -> Vec<Change> {
        write(&self.dir.join(EVENT).join("enable"), "0");
        let mut overrun = 0u64;
        for cpu in fs::read_dir(self.dir.join("per_cpu")).expect("read the instance's per_cpu").flatten() {
            let stats = fs::read_to_string(cpu.path().join("stats")).unwrap_or_default();
            overrun += stats.lines().find_map(|l| l.strip_prefix("overrun:")).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
        }
        assert_eq!(overrun, 0, "ftrace overran its buffer in {}", self.dir.display());
        let text = fs::read_to_string(self.dir.join("trace")).expect("read the instance's trace");
        text.lines().filter(|l| !l.starts_with('#')).filter_map(parse).collect()
    }
}

impl Drop for StateTrace {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join(EVENT).join("enable"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

