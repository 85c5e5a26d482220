//! Figure 9: what each tracer costs per connection, side by side in one run
//! (issue 14): netstat's NDJSON stream (to /dev/null and to a file), its
//! text stream, its live table (`-ano 5`, `-ano 1`, text and `--json`), and
//! bpftrace's printf and in-kernel count scripts, at a fixed rate and at
//! maximum churn. For each: BPF ns per program run and µs per connection
//! (`run_time_ns`/`run_cnt` of the tracer's own programs, with
//! `kernel.bpf_stats_enabled=1`), the tracer's CPU µs per connection
//! (utime+stime from /proc/PID/stat, start-up excluded), the churn rate
//! beside the untraced one, events lost as the tracer counted them, and for
//! the live table the closed connection ends it listed. Also each netstat
//! form's RssAnon once attached and the kernel memory of its maps (memlock).
use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::Section;
use crate::bench::{
    options::{Bins, Opts},
    prog_stats::{Runs, StatsEnabled, programs_of},
    sampling::wait_idle,
    stats::{median, spread},
    tracer::{Tracer, TracerKind, tracer_label},
    workload::{EVENTS_PER_CONN, churn},
};

/// The paced workload: about PERF-NOTES' 8,000-20,000 connections/s.
const RATE: u64 = 10_000;
const RATE_SECONDS: u64 = 5;
/// Maximum churn: the "10 s and more".
const MAX_SECONDS: u64 = 10;

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    Null,
    /// stdout to a file (deleted after the run); the live table always
    /// writes to one, so its displays can be read back.
    File,
}

#[derive(Clone, Copy)]
struct Variant {
    kind: Option<TracerKind>,
    sink: Sink,
}

impl Variant {
    fn label(&self) -> String {
        match (self.kind, self.sink) {
            (None, _) => "untraced".into(),
            (Some(TracerKind::Netstat { ring: None }), Sink::File) => "netstat --stream --json > FILE".into(),
            (Some(k @ TracerKind::Live { .. }), _) => format!("{} > FILE", tracer_label(k)),
            (Some(k), _) => tracer_label(k),
        }
    }

    fn is_netstat(&self) -> bool {
        !matches!(self.kind, None | Some(TracerKind::Bpftrace(_)))
    }
}

const VARIANTS: [Variant; 9] = [
    Variant { kind: None, sink: Sink::Null },
    Variant { kind: Some(TracerKind::Netstat { ring: None }), sink: Sink::Null },
    Variant { kind: Some(TracerKind::Netstat { ring: None }), sink: Sink::File },
    Variant { kind: Some(TracerKind::NetstatText), sink: Sink::Null },
    Variant { kind: Some(TracerKind::Live { interval: 5, json: false }), sink: Sink::File },
    Variant { kind: Some(TracerKind::Live { interval: 1, json: false }), sink: Sink::File },
    Variant { kind: Some(TracerKind::Live { interval: 1, json: true }), sink: Sink::File },
    Variant { kind: Some(TracerKind::Bpftrace("tcpstates.bt")), sink: Sink::Null },
    Variant { kind: Some(TracerKind::Bpftrace("tcpcount.bt")), sink: Sink::Null },
];

/// One traced (or untraced) churn run.
#[derive(Default, Clone)]
struct Sample {
    conns: u64,
    rate: f64,
    bpf: Runs,
    cpu_s: f64,
    lost: u64,
    /// Live table: (closed ends of the churn listed, ends the churn made).
    listed: Option<(u64, u64)>,
    rss_anon_kb: u64,
    memlock: u64,
    hwm_kb: u64,
}

/// utime+stime of a whole process (every thread), seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(super) fn status_kb(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// Kernel memory of the BPF maps `pid` holds (fdinfo `memlock`, each map once).
fn map_memlock(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    let mut seen = HashSet::new();
    let mut total = 0;
    for e in dir.filter_map(Result::ok) {
        if !fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf-map")) {
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).unwrap_or_default();
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()));
        if let (Some(id), Some(m)) = (field("map_id:"), field("memlock:"))
            && seen.insert(id)
        {
            total += m;
        }
    }
    total
}

/// Counts the displays a live table writes past a byte offset of its
/// output (a JSON document per line, or an `Active Connections` heading per
/// text display), reading each new byte once however often it is polled.
struct DisplayCounter {
    path: PathBuf,
    /// Where the next whole line starts.
    pos: u64,
    seen: usize,
}

impl DisplayCounter {
    fn new(path: &std::path::Path, from: u64) -> DisplayCounter {
        DisplayCounter { path: path.to_path_buf(), pos: from, seen: 0 }
    }

    /// Displays begun past the offset so far.
    fn poll(&mut self) -> usize {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut new = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.path)
            && f.seek(SeekFrom::Start(self.pos)).is_ok()
        {
            let _ = f.read_to_end(&mut new);
        }
        // Whole lines only: a line still being written is read next time.
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else { return self.seen };
        self.seen += new[..end]
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"{") || l.starts_with(b"Active Connections"))
            .count();
        self.pos += end as u64 + 1;
        self.seen
    }
}

/// What a live table's output says: (events lost, the highest count any
/// display gave; closed rows whose either end is one of `listeners`).
fn read_live(path: &PathBuf, json: bool, listeners: &HashSet<String>) -> (u64, u64) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let (mut lost, mut listed) = (0u64, 0u64);
    if json {
        for doc in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            lost = lost.max(doc["lost_events"].as_u64().unwrap_or(0));
            let ep = |v: &serde_json::Value| format!("{}:{}", v["addr"].as_str().unwrap_or(""), v["port"]);
            listed += doc["closed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| listeners.contains(&ep(&c["local"])) || listeners.contains(&ep(&c["remote"])))
                .count() as u64;
        }
        return (lost, listed);
    }
    let mut closed = false;
    for line in text.lines() {
        if line.starts_with("Closed since last display") {
            closed = true;
        } else if line.starts_with("Active Connections") {
            closed = false;
        } else if let Some(rest) = line.trim().strip_prefix("table may be incomplete: ") {
            lost = lost.max(rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0));
        } else if closed {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 3 && f[0] == "TCP" && (listeners.contains(f[1]) || listeners.contains(f[2])) {
                listed += 1;
            }
        }
    }
    (lost, listed)
}

fn run_one(bins: &Bins, v: &Variant, seconds: u64, rate: u64) -> Result<Sample> {
    wait_idle();
    let out_path = std::env::temp_dir().join(format!("netstat-bench-cost-{}.out", std::process::id()));
    let _ = fs::remove_file(&out_path);
    let Some(kind) = v.kind else {
        let c = churn(bins, seconds, rate, 2)?;
        return Ok(Sample { conns: c.connections, rate: c.rate, ..Sample::default() });
    };
    let stdout = match v.sink {
        Sink::Null => Stdio::null(),
        Sink::File => Stdio::from(fs::File::create(&out_path).context("creating the tracer's output file")?),
    };
    let t = Tracer::start(bins, kind, stdout).map_err(|e| anyhow::anyhow!("{}: {e}", v.label()))?;
    let pid = t.child.id();
    let (progs0, cpu0) = (programs_of(pid)?, cpu_seconds(pid).context("reading the tracer's CPU time")?);
    let (rss_anon_kb, memlock) = (status_kb(pid, "RssAnon:"), map_memlock(pid));
    let c = churn(bins, seconds, rate, 2)?;
    let listeners: HashSet<String> = c.listeners.iter().cloned().collect();
    let written_at_end = fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0);
    // What the tracer still does for this churn: the drain, and for the live
    // table the next display (it lists the last closes).
    let settle = match kind {
        TracerKind::Live { interval, .. } => Duration::from_secs(interval as u64) + Duration::from_millis(1500),
        _ => Duration::from_millis(1000),
    };
    thread::sleep(settle);
    let (progs1, cpu1) = (programs_of(pid)?, cpu_seconds(pid).context("reading the tracer's CPU time")?);
    let hwm_kb = status_kb(pid, "VmHWM:");
    let mut bpf = Runs::default();
    for (id, a) in &progs1 {
        let d = *a - progs0.get(id).copied().unwrap_or_default();
        bpf.count += d.count;
        bpf.ns += d.ns;
    }
    // Every closed end is listed by a display begun after the churn ended:
    // the first written past the churn's end may have taken its list
    // before, the second began after the first was written, and a third
    // heading means the second is whole (under a large table a display
    // takes longer than the interval). The CPU above stays what it was.
    if matches!(kind, TracerKind::Live { .. }) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut displays = DisplayCounter::new(&out_path, written_at_end);
        while displays.poll() < 3 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
    }
    let (mut lost, _) = t.finish();
    let mut listed = None;
    if let TracerKind::Live { json, .. } = kind {
        let (l, n) = read_live(&out_path, json, &listeners);
        lost += l;
        listed = Some((n, 2 * c.connections));
    }
    let _ = fs::remove_file(&out_path);
    Ok(Sample {
        conns: c.connections,
        rate: c.rate,
        bpf,
        cpu_s: cpu1 - cpu0,
        lost,
        listed,
        rss_anon_kb,
        memlock,
        hwm_kb,
    })
}

#[derive(Default)]
struct Cell {
    samples: Vec<Sample>,
    failure: Option<String>,
}

impl Cell {
    fn per_conn(&self, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.samples.iter().filter(|s| s.conns > 0).map(|s| f(s) / s.conns as f64).collect()
    }
}

fn fmt_mid(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let (lo, hi) = spread(v);
    if v.len() == 1 { format!("{:.digits$}", v[0]) } else { format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(v)) }
}

pub fn measure(opts: &Opts, bins: &Bins, section: &mut Section) -> Result<()> {
    let Section { body: s, notes } = section;
    eprintln!("bench: figure 9, tracer cost side by side ({})", bins.netstat.display());
    let _stats = StatsEnabled::on()?;
    let runs = opts.runs.min(3);
    let workloads = [("fixed rate", RATE_SECONDS, RATE), ("maximum churn", MAX_SECONDS, 0)];
    let mut cells: Vec<Vec<Cell>> = workloads.iter().map(|_| VARIANTS.iter().map(|_| Cell::default()).collect()).collect();
    for (w, (name, secs, rate)) in workloads.iter().enumerate() {
        for round in 0..runs {
            for k in 0..VARIANTS.len() {
                let i = (k + round) % VARIANTS.len();
                let cell = &mut cells[w][i];
                if cell.failure.is_some() {
                    continue;
                }
                match run_one(bins, &VARIANTS[i], *secs, *rate) {
                    Ok(smp) => {
                        eprintln!(
                            "bench:   {name:<13} {:<36} {:>7.0} conn/s  bpf {:.2} µs/conn  cpu {:.2} µs/conn  lost {}",
                            VARIANTS[i].label(),
                            smp.rate,
                            smp.bpf.ns as f64 / 1e3 / smp.conns.max(1) as f64,
                            smp.cpu_s * 1e6 / smp.conns.max(1) as f64,
                            smp.lost
                        );
                        cell.samples.push(smp);
                    }
                    Err(e) => {
                        eprintln!("bench:   {}: {e:#}", VARIANTS[i].label());
                        cell.failure = Some(format!("{e:#}"));
                    }
                }
            }
        }
    }

    let _ = writeln!(
        s,
        "Every tracer measured in one run, alternated, {runs} runs each, `kernel.bpf_stats_enabled=1` throughout (it adds \
         two clock reads per program run, to every tracer alike). Workloads: `netstat-load churn --processes 2` paced at \
         {RATE} connections/s for {RATE_SECONDS} s, and at its maximum rate for {MAX_SECONDS} s (each connection is {} \
         events: 10 transitions and an accept). BPF: the tracer's own programs (`run_time_ns`, `run_cnt` of its program \
         fds). Tracer CPU: its utime+stime from /proc/PID/stat, from attached to the end of the churn plus the drain (the \
         live table: plus its next display). Lost: as the tracer counted them (netstat: its LOST counters and the \
         table's `lost_events`; bpftrace: `Lost N events`). Listed: the live table's closed rows with one end on the \
         churn's listeners in every display up to the second one begun after the churn ended, against the ends the \
         churn closed (2 per connection). Medians (min–max).\n",
        EVENTS_PER_CONN
    );
    for (w, (name, _, _)) in workloads.iter().enumerate() {
        let base = median(&cells[w][0].samples.iter().map(|x| x.rate).collect::<Vec<_>>());
        let _ = writeln!(s, "**{name}**\n");
        let _ = writeln!(
            s,
            "| tracer | connections/s | vs untraced | BPF ns/run | BPF µs/conn | tracer CPU µs/conn | events lost | closed ends listed |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (i, v) in VARIANTS.iter().enumerate() {
            let c = &cells[w][i];
            if let Some(e) = &c.failure {
                let _ = writeln!(s, "| `{}` | not measured: {e} | – | – | – | – | – | – |", v.label());
                notes.push(format!("{name}, {}: not measured ({e})", v.label()));
                continue;
            }
            let rates: Vec<f64> = c.samples.iter().map(|x| x.rate).collect();
            let ratio = if i == 0 { "1.00x".into() } else { format!("{:.2}x", median(&rates) / base) };
            let ns_run: Vec<f64> =
                c.samples.iter().filter(|x| x.bpf.count > 0).map(|x| x.bpf.ns as f64 / x.bpf.count as f64).collect();
            let bpf = c.per_conn(|x| x.bpf.ns as f64 / 1e3);
            let cpu = c.per_conn(|x| x.cpu_s * 1e6);
            let lost: u64 = c.samples.iter().map(|x| x.lost).sum();
            let events: u64 = c.samples.iter().map(|x| x.conns * EVENTS_PER_CONN).sum();
            let listed = c.samples.iter().filter_map(|x| x.listed).fold(None, |acc: Option<(u64, u64)>, (a, b)| {
                let (x, y) = acc.unwrap_or((0, 0));
                Some((x + a, y + b))
            });
            let (lost_cell, listed_cell) = if v.kind.is_none() {
                ("–".to_string(), "–".to_string())
            } else {
                (
                    format!("{lost} of ~{events}"),
                    listed.map(|(a, b)| format!("{a} of {b}")).unwrap_or_else(|| "–".into()),
                )
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {ratio} | {} | {} | {} | {lost_cell} | {listed_cell} |",
                v.label(),
                fmt_mid(&rates, 0),
                fmt_mid(&ns_run, 0),
                fmt_mid(&bpf, 2),
                fmt_mid(&cpu, 2),
            );
            if v.kind.is_some() {
                notes.push(format!(
                    "{name}, {}: BPF {} µs/conn, CPU {} µs/conn, {ratio}, lost {lost}",
                    v.label(),
                    fmt_mid(&bpf, 2),
                    fmt_mid(&cpu, 2)
                ));
            }
        }
        let _ = writeln!(s);
    }
    // Memory once attached, from the fixed-rate runs (idle at that moment).
    let _ = writeln!(s, "Memory of each netstat form once attached (before the churn), and its peak by the end of the churn:\n");
    let _ = writeln!(s, "| tracer | RssAnon attached | maps' kernel memory (memlock) | VmHWM at the end, fixed rate | VmHWM at the end, maximum churn |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let mib = |kb: f64| format!("{:.1} MiB", kb / 1024.0);
    for (i, v) in VARIANTS.iter().enumerate().filter(|(_, v)| v.is_netstat()) {
        let anon: Vec<f64> = cells[0][i].samples.iter().map(|x| x.rss_anon_kb as f64).collect();
        let memlock: Vec<f64> = cells[0][i].samples.iter().map(|x| x.memlock as f64 / 1024.0).collect();
        let hwm = |w: usize| -> String {
            let v: Vec<f64> = cells[w][i].samples.iter().map(|x| x.hwm_kb as f64).collect();
            if v.is_empty() { "–".into() } else { mib(median(&v)) }
        };
        let cell = |v: &[f64]| if v.is_empty() { "–".into() } else { mib(median(v)) };
        let _ = writeln!(s, "| `{}` | {} | {} | {} | {} |", v.label(), cell(&anon), cell(&memlock), hwm(0), hwm(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_are_counted_past_the_offset_from_whole_lines_once() {
        use std::io::Write as _;
        let path = std::env::temp_dir().join(format!("cost-displays-{}", std::process::id()));
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(b"\nActive Connections\n  TCP ...\n").unwrap();
        let mut c = DisplayCounter::new(&path, fs::metadata(&path).unwrap().len());
        assert_eq!(c.poll(), 0);
        // A heading still being written is not counted until its line ends.
        f.write_all(b"\nActive Conn").unwrap();
        assert_eq!(c.poll(), 0);
        f.write_all(b"ections\n  TCP ...\n{\"schema\":1}\n").unwrap();
        assert_eq!(c.poll(), 2);
        assert_eq!(c.poll(), 2);
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn live_output_is_read_for_losses_and_closed_rows() {
        let dir = std::env::temp_dir().join(format!("cost-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let l: HashSet<String> = ["127.0.0.1:33001".to_string()].into();
        let text = dir.join("t");
        fs::write(
            &text,
            "\nActive Connections\n\n  TCP    127.0.0.1:5   127.0.0.1:33001  TIME_WAIT  0\n\nClosed since last display\n\n  \
             Proto  Local Address  Foreign Address  Final State  PID  Lived\n  TCP    127.0.0.1:48764  127.0.0.1:33001  \
             TIME_WAIT  23668  276.2us\n  TCP    127.0.0.1:33001  127.0.0.1:48764  CLOSED  23667  219.2us\n  TCP    \
             127.0.0.1:1  127.0.0.1:2  CLOSED  1  1us\n\ntable may be incomplete: 12 events lost since 10:00 (ring_full 12)\n",
        )
        .unwrap();
        assert_eq!(read_live(&text, false, &l), (12, 2));
        let json = dir.join("j");
        fs::write(
            &json,
            "{\"lost_events\":3,\"closed\":[{\"local\":{\"addr\":\"127.0.0.1\",\"port\":33001},\"remote\":{\"addr\":\"127.0.0.1\",\"port\":9}}]}\n\
             {\"lost_events\":5,\"closed\":[{\"local\":{\"addr\":\"127.0.0.1\",\"port\":9},\"remote\":{\"addr\":\"127.0.0.1\",\"port\":33001}},\
             {\"local\":{\"addr\":\"127.0.0.1\",\"port\":9},\"remote\":{\"addr\":\"127.0.0.1\",\"port\":8}}]}\n",
        )
        .unwrap();
        assert_eq!(read_live(&json, true, &l), (5, 2));
        fs::remove_dir_all(&dir).unwrap();
    }
}
