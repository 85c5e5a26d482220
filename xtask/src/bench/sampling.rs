//! Samples of the machine taken around measurements: CPU idleness from
//! /proc/stat (to start each measurement on an idle CPU, and to say in the
//! results how often it never came) and a process's memory from
//! /proc/PID/status. Reads /proc only.
use std::{
    fs,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Total and idle jiffies of all CPUs.
fn cpu_jiffies() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (v.iter().sum(), idle)
}

/// Measurements started, and how many of them found the CPU busy.
static MEASURED: AtomicUsize = AtomicUsize::new(0);
static BUSY: AtomicUsize = AtomicUsize::new(0);
static BUSY_IN_A_ROW: AtomicUsize = AtomicUsize::new(0);

/// Other work distorts what we measure: wait (bounded) for a mostly idle
/// CPU, and count the times it never came so the results can say so.
pub fn wait_idle() {
    MEASURED.fetch_add(1, Ordering::Relaxed);
    // On a machine that stays busy, waiting the full time before every
    // measurement only makes the bench longer: after three misses in a row,
    // wait briefly.
    let patience = if BUSY_IN_A_ROW.load(Ordering::Relaxed) >= 3 { 750 } else { 4000 };
    let deadline = Instant::now() + Duration::from_millis(patience);
    while Instant::now() < deadline {
        let (t0, i0) = cpu_jiffies();
        thread::sleep(Duration::from_millis(250));
        let (t1, i1) = cpu_jiffies();
        if t1 > t0 && (i1 - i0) as f64 / (t1 - t0) as f64 >= 0.85 {
            BUSY_IN_A_ROW.store(0, Ordering::Relaxed);
            return;
        }
    }
    BUSY.fetch_add(1, Ordering::Relaxed);
    BUSY_IN_A_ROW.fetch_add(1, Ordering::Relaxed);
}

/// (measurements that found the CPU busy, measurements started).
pub fn busy_counts() -> (usize, usize) {
    (BUSY.load(Ordering::Relaxed), MEASURED.load(Ordering::Relaxed))
}

/// VmHWM and VmRSS (KiB) of a running process, when both can be read.
pub fn peak_and_rss(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
