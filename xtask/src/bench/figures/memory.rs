//! Figure 4: peak RSS of the live table (`netstat -ano 5`) idle and at each
//! held size, per connection above the idle baseline.
use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::bench::{
    options::Bins,
    process::{collect, stop},
    sampling::{peak_and_rss, wait_idle},
    workload::Held,
};

/// Memory of one `netstat -ano 5` run, KiB.
#[derive(Clone, Copy)]
struct Mem {
    /// VmHWM: the peak, what the target is about.
    peak: u64,
    /// VmRSS when it was stopped: the live table without start-up transients.
    last: u64,
    /// RssAnon when it was stopped: the process's own heap and stacks,
    /// without the binary's pages and the ring buffer's shared ones.
    anon: u64,
}

pub struct Memory {
    /// Why `netstat -ano` cannot run, found before the sweep.
    ours_ano: Option<String>,
    /// (connections, memory); 0 is the idle baseline.
    rows: Vec<(u64, Result<Mem, String>)>,
}

impl Memory {
    pub fn new(ours_ano: Option<String>) -> Memory {
        Memory { ours_ano, rows: Vec::new() }
    }

    pub fn baseline(&mut self, bins: &Bins) {
        self.rows.push((0, peak_rss(bins, &self.ours_ano)));
    }

    pub fn at(&mut self, bins: &Bins, n: u64, held: &mut Held) {
        let rss = peak_rss(bins, &self.ours_ano);
        self.rows.push((n, held.gone().map_or(rss, Err)));
    }

    /// The section body and the summary notes.
    pub fn finish(self) -> (String, Vec<String>) {
        let base = self.rows.first().and_then(|(_, r)| r.as_ref().ok().copied());
        let mib = |kb: u64| format!("{:.1} MiB", kb as f64 / 1024.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Peak RSS (VmHWM) of `netstat -ano 5` with stdout to /dev/null, sampled until it had run 12 s (two \
             redisplays). Target: at most 300 bytes per connection above the idle baseline (peak). The RSS when \
             it was stopped is beside it: start-up transients (BTF, program loading) can set the peak at small N. \
             RssAnon at the end (`/proc/PID/status`: its own heap and stacks, not the binary's pages or the \
             ring buffer's) is the idle target's measure: at most 16 MiB idle.\n"
        );
        let _ = writeln!(
            s,
            "| connections | peak RSS | peak above idle | bytes per connection | RSS at the end | bytes per connection (end) | RssAnon at the end |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        let mut notes = Vec::new();
        for (n, r) in &self.rows {
            match (r, base) {
                (Ok(m), Some(b)) if *n > 0 => {
                    let above = m.peak.saturating_sub(b.peak) * 1024;
                    let per = above as f64 / *n as f64;
                    let per_end = (m.last.saturating_sub(b.last) * 1024) as f64 / *n as f64;
                    let _ = writeln!(
                        s,
                        "| {n} | {} | {:.1} MiB | {per:.0} | {} | {per_end:.0} | {} |",
                        mib(m.peak),
                        above as f64 / 1048576.0,
                        mib(m.last),
                        mib(m.anon)
                    );
                    notes.push(format!(
                        "{n}: {per:.0} B/connection above idle ({})",
                        if per <= 300.0 { "target ≤300 met" } else { "target ≤300 MISSED" }
                    ));
                }
                (Ok(m), _) => {
                    let label = if *n == 0 { "idle".into() } else { n.to_string() };
                    let _ = writeln!(s, "| {label} | {} | – | – | {} | – | {} |", mib(m.peak), mib(m.last), mib(m.anon));
                    if *n == 0 {
                        notes.push(format!(
                            "idle RssAnon {} ({})",
                            mib(m.anon),
                            if m.anon <= 16 * 1024 { "target ≤16 MiB met" } else { "target ≤16 MiB MISSED" }
                        ));
                    }
                }
                (Err(e), _) => {
                    let label = if *n == 0 { "idle".into() } else { n.to_string() };
                    let _ = writeln!(s, "| {label} | not measured: {e} | – | – | – | – | – |");
                    if notes.is_empty() || self.ours_ano.is_none() {
                        notes.push(format!("{label}: not measured ({e})"));
                    }
                }
            }
        }
        (s, notes)
    }
}

/// Peak and final RSS of `netstat -ano 5` over 12 s.
fn peak_rss(bins: &Bins, known_failure: &Option<String>) -> Result<Mem, String> {
    if let Some(e) = known_failure {
        return Err(e.clone());
    }
    wait_idle();
    let mut child = Command::new(&bins.netstat)
        .args(["-ano", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let err = collect(child.stderr.take().unwrap());
    let start = Instant::now();
    let (mut peak, mut last, mut anon) = (0, 0, 0);
    let mut exited = None;
    while start.elapsed() < Duration::from_secs(12) {
        if let Ok(Some(s)) = child.try_wait() {
            exited = Some(s);
            break;
        }
        if let Some((hwm, rss)) = peak_and_rss(child.id()) {
            peak = peak.max(hwm);
            last = rss;
            anon = super::cost::status_kb(child.id(), "RssAnon:");
        }
        thread::sleep(Duration::from_millis(100));
    }
    if exited.is_none() {
        stop(&mut child);
    }
    let err = err.join().unwrap_or_default();
    if let Some(s) = exited {
        return Err(format!("`netstat -ano 5` exited early with {s}: {}", err.lines().next().unwrap_or("").trim()));
    }
    if peak == 0 {
        return Err("could not read VmHWM".into());
    }
    Ok(Mem { peak, last, anon })
}
