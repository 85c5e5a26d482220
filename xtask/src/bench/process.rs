//! Child-process plumbing the measurements share: finding commands, stopping
//! children politely, collecting their stderr. Measures nothing itself.
use std::{
    fs,
    io::{BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1))
        == Some("0")
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill").args([format!("-{sig}"), child.id().to_string()]).status();
}

/// Stop a child politely (SIGINT), then firmly; returns whether it exited 0.
pub fn stop(child: &mut Child) -> Option<std::process::ExitStatus> {
    signal(child, "INT");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Collect a child's stderr on a thread.
pub fn collect(r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(r).read_to_string(&mut s);
        s
    })
}
