//! `cargo xtask bench`: the five figures of issue 6, each measured side by side
//! with its anchor in the same run (commands alternated, several runs, medians
//! and spread), written to bench/RESULTS.md. Owns measurement only: workloads
//! come from `netstat-load`, and every command is run as a user would run it.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "usage: cargo xtask bench [--runs N] [--no-100k] [--only 1,2,3,4,5] [--churn-seconds S] [--out PATH]

Runs the five figures of issue 6 (needs root) and writes bench/RESULTS.md.
  --runs N            timed runs per command (default 5; 3 for commands slower than 5 s)
  --no-100k           skip the 100k-connection step of figures 1 and 4 (saves ~3 minutes)
  --only LIST         only these figures
  --churn-seconds S   length of each churn run in figures 3 and 5 (default 5)
  --out PATH          where to write the results (default bench/RESULTS.md)";

/// Commands the comparisons need, with their Debian packages.
const BENCH_COMMANDS: &[(&str, &str)] = &[
    ("ss", "iproute2"),
    ("netstat", "net-tools"),
    ("bpftrace", "bpftrace"),
    ("hyperfine", "hyperfine"),
];

/// Where captured command output goes while timed (tmpfs: writing is cheap).
const OUT_FILE: &str = "/dev/shm/netstat-bench.out";
/// No single command may run longer than this.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// A command this slow gets fewer runs, to keep the bench near ten minutes.
const SLOW: Duration = Duration::from_secs(5);
const SLOW_RUNS: usize = 3;
/// State changes plus the accept event per loopback connection (issue 6).
const EVENTS_PER_CONN: u64 = 11;
/// Figure 5 times one stream line in this many (see the reader).
const LATENCY_SAMPLE: u64 = 8;

struct Opts {
    runs: usize,
    big: bool,
    figures: Vec<u8>,
    churn_seconds: u64,
    out: PathBuf,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Option<Opts>> {
        let mut o = Opts {
            runs: 5,
            big: true,
            figures: vec![1, 2, 3, 4, 5],
            churn_seconds: 5,
            out: crate::root().join("bench/RESULTS.md"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
            match a.as_str() {
                "--runs" => o.runs = val()?.parse().context("--runs")?,
                "--no-100k" => o.big = false,
                "--only" => {
                    o.figures = val()?.split(',').map(|f| f.trim().parse()).collect::<Result<_, _>>().context("--only")?
                }
                "--churn-seconds" => o.churn_seconds = val()?.parse().context("--churn-seconds")?,
                "--out" => o.out = PathBuf::from(val()?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => bail!("unknown bench option '{other}'\n{USAGE}"),
            }
        }
        if o.runs == 0 {
            bail!("--runs must be at least 1");
        }
        Ok(Some(o))
    }
}

/// The binaries under test.
struct Bins {
    netstat: PathBuf,
    load: PathBuf,
    nettools: PathBuf,
}

pub fn run(args: &[String]) -> Result<()> {
    let Some(opts) = Opts::parse(args)? else { return Ok(()) };
    if !is_root() {
        bail!("the benchmarks trace the kernel and hold 100k sockets: run as root");
    }
    crate::bootstrap::ensure()?;
    crate::bootstrap::ensure_commands(BENCH_COMMANDS)?;
    crate::bootstrap::prepare_kernel_env();
    let mut c = crate::cargo();
    c.args(["build", "--release", "-p", "netstat-user", "--bins"]);
    crate::check(c)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::root().join("target"));
    let target = if target.is_relative() { crate::root().join(target) } else { target };
    let bins = Bins {
        netstat: target.join("release/netstat"),
        load: target.join("release/netstat-load"),
        nettools: which("netstat").context("net-tools netstat not found on PATH")?,
    };

    let started = Instant::now();
    let mut report = Report { machine: machine(), ..Default::default() };
    let want = |f: u8| opts.figures.contains(&f);
    if want(1) || want(4) {
        snapshots(&opts, &bins, &mut report)?;
    }
    type Figure = fn(&Opts, &Bins, &mut String, &mut Vec<String>) -> Result<()>;
    for (n, figure) in [(2u8, loss as Figure), (3, overhead), (5, latency)] {
        if want(n) {
            let (mut section, mut notes) = (String::new(), Vec::new());
            let r = figure(&opts, &bins, &mut section, &mut notes);
            if let Err(e) = &r {
                let _ = writeln!(section, "\nNot completed: {e:#}");
                notes.push(format!("not completed: {e:#}"));
            }
            report.sections.insert(n, section);
            report.summary.insert(n, notes);
        }
    }
    let _ = fs::remove_file(OUT_FILE);
    report.elapsed = started.elapsed();
    let md = report.markdown(&opts);
    if let Some(dir) = opts.out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&opts.out, &md).with_context(|| format!("writing {}", opts.out.display()))?;
    println!("\n{}", report.summary());
    println!("bench: wrote {} in {:.0} s", opts.out.display(), report.elapsed.as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------- results

#[derive(Default)]
struct Report {
    machine: Vec<(String, String)>,
    /// Figure number -> its markdown section body.
    sections: BTreeMap<u8, String>,
    /// One line per figure for the printed summary.
    summary: BTreeMap<u8, Vec<String>>,
    elapsed: Duration,
}

impl Report {
    fn section(&mut self, fig: u8) -> &mut String {
        self.sections.entry(fig).or_default()
    }

    fn note(&mut self, fig: u8, line: String) {
        self.summary.entry(fig).or_default().push(line);
    }

    fn markdown(&self, opts: &Opts) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Generated by `cargo xtask bench{}{}` in {:.0} s. Each figure is a ratio against its anchor measured \
             in the same run: commands alternate (order rotated each round), the CPU is left to go idle before \
             each measurement, and every cell is the median of the runs with the spread (min–max) beside it. \
             Workloads come from `netstat-load` (netstat-user/src/bin/netstat-load/).\n",
            if opts.big { "" } else { " --no-100k" },
            if opts.runs == 5 { String::new() } else { format!(" --runs {}", opts.runs) },
            self.elapsed.as_secs_f64()
        );
        let (busy, measured) = (BUSY.load(Ordering::Relaxed), MEASURED.load(Ordering::Relaxed));
        if busy > 0 {
            let _ = writeln!(
                s,
                "> Other work was running: before {busy} of {measured} measurements the CPU did not go idle \
                 (85% idle over 250 ms) within the wait (4 s, then 0.75 s once it kept missing). Ratios from the same run still compare like with like; \
                 absolute times and rates are pessimistic.\n"
            );
        }
        let _ = writeln!(s, "## Machine\n");
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let titles = [
            (1, "1. Snapshot: listing N established loopback connections (2N sockets)"),
            (2, "2. Loss: `netstat --stream --json >/dev/null` under maximum churn"),
            (3, "3. Overhead: churn rate with a tracer running vs untraced"),
            (4, "4. Memory: peak RSS of `netstat -ano 5` (live table)"),
            (5, "5. Latency: kernel transition to its line on stdout"),
        ];
        for (n, title) in titles {
            let _ = writeln!(s, "\n## {title}\n");
            match self.sections.get(&n) {
                Some(body) => s.push_str(body),
                None => s.push_str("Not run (excluded with --only).\n"),
            }
        }
        s
    }

    fn summary(&self) -> String {
        let mut s = String::from("Summary (details in bench/RESULTS.md):\n");
        for (n, lines) in &self.summary {
            for l in lines {
                let _ = writeln!(s, "  fig {n}: {l}");
            }
        }
        s
    }
}

/// Wall times of one command over its runs.
#[derive(Clone, Default)]
struct Times {
    secs: Vec<f64>,
    lines: usize,
    failure: Option<String>,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn spread(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

fn fmt_secs(s: f64) -> String {
    if s >= 1.0 { format!("{s:.2} s") } else { format!("{:.1} ms", s * 1000.0) }
}

fn cell(t: &Times) -> String {
    if let Some(f) = &t.failure {
        return format!("not measured: {f}");
    }
    let (lo, hi) = spread(&t.secs);
    format!("{} ({}–{}, n={})", fmt_secs(median(&t.secs)), fmt_secs(lo), fmt_secs(hi), t.secs.len())
}

// ---------------------------------------------------------------- machine

fn machine() -> Vec<(String, String)> {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown".into());
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let virt = if cpuinfo.contains(" hypervisor") { ", virtual machine" } else { "" };
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string()))
        .unwrap_or_default();
    let first_line = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .ok()
            .map(|o| {
                let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                String::from_utf8_lossy(&s).lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_else(|| "missing".into())
    };
    let git = first_line(&["git", "-C", crate::root().to_str().unwrap_or("."), "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", crate::root().to_str().unwrap_or("."), "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let sysctl = |k: &str| read(&format!("/proc/sys/{}", k.replace('.', "/"))).split_whitespace().collect::<Vec<_>>().join("-");
    vec![
        ("date".into(), first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])),
        ("kernel".into(), read("/proc/sys/kernel/osrelease").trim().to_string()),
        ("cpu".into(), format!("{cpus} × {model}{virt}")),
        ("memory".into(), mem),
        ("open files per process".into(), first_line(&["sh", "-c", "ulimit -Hn"])),
        (
            "ports".into(),
            format!(
                "ephemeral {}, tcp_tw_reuse {}, somaxconn {}",
                sysctl("net.ipv4.ip_local_port_range"),
                sysctl("net.ipv4.tcp_tw_reuse"),
                sysctl("net.core.somaxconn")
            ),
        ),
        ("netstat".into(), format!("git {git}{}", if dirty { " (with uncommitted changes)" } else { "" })),
        ("ss".into(), first_line(&["ss", "-V"])),
        ("net-tools".into(), first_line(&["netstat", "-V"])),
        ("bpftrace".into(), first_line(&["bpftrace", "--version"])),
    ]
}

// ---------------------------------------------------------------- process helpers

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1))
        == Some("0")
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill").args([format!("-{sig}"), child.id().to_string()]).status();
}

/// Stop a child politely (SIGINT), then firmly; returns whether it exited 0.
fn stop(child: &mut Child) -> Option<std::process::ExitStatus> {
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
fn collect(r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(r).read_to_string(&mut s);
        s
    })
}

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
fn wait_idle() {
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

/// Time one command with stdout captured to tmpfs; Err is why it failed.
fn time_once(argv: &[String]) -> Result<(f64, usize), String> {
    let out = fs::File::create(OUT_FILE).map_err(|e| format!("{OUT_FILE}: {e}"))?;
    wait_idle();
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    let err = collect(child.stderr.take().unwrap());
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if start.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("took over {} s", COMMAND_LIMIT.as_secs()));
        }
        // Polling error stays under 1% of the time measured, without
        // spinning beside a long command.
        thread::sleep((start.elapsed() / 100).clamp(Duration::from_micros(100), Duration::from_millis(20)));
    };
    let secs = start.elapsed().as_secs_f64();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let first = err.lines().next().unwrap_or("").trim().to_string();
        return Err(format!("`{}` exited with {status}: {first}", argv.join(" ")));
    }
    let lines = fs::read(OUT_FILE).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0);
    Ok((secs, lines))
}

/// Time several commands alternately, rotating their order each round.
fn time_alternating(cmds: &[(String, Vec<String>)], runs: usize, held: &mut Held) -> Result<Vec<Times>, String> {
    let mut times = vec![Times::default(); cmds.len()];
    let mut wanted = vec![runs; cmds.len()];
    for round in 0..runs {
        for k in 0..cmds.len() {
            let i = (k + round) % cmds.len();
            if times[i].failure.is_some() || times[i].secs.len() >= wanted[i] {
                continue;
            }
            match time_once(&cmds[i].1) {
                Ok((s, lines)) => {
                    if let Some(why) = held.gone() {
                        return Err(why);
                    }
                    eprintln!("bench:   {:<28} {}", cmds[i].0, fmt_secs(s));
                    if s > SLOW.as_secs_f64() {
                        wanted[i] = wanted[i].min(SLOW_RUNS);
                    }
                    times[i].lines = if times[i].secs.is_empty() { lines } else { times[i].lines.min(lines) };
                    times[i].secs.push(s);
                }
                Err(e) => {
                    eprintln!("bench:   {:<28} failed: {e}", cmds[i].0);
                    times[i].failure = Some(e);
                }
            }
        }
    }
    Ok(times)
}

/// `netstat-load hold-many`, running until dropped.
struct Held {
    child: Child,
    setup_ms: u64,
    /// TCP sockets on the machine besides the 2N held ones (others' work).
    others: u64,
}

impl Held {
    fn start(bins: &Bins, n: u64) -> Result<Held> {
        let mut child = Command::new(&bins.load)
            .args(["hold-many", "--name", "bench-hold", "--connections", &n.to_string(), "--seconds", "1200"])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting netstat-load hold-many")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        if !line.contains("\"ready\":true") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("netstat-load hold-many {n} did not get ready: {line:?}");
        }
        let setup_ms = json_u64(&line, "setup_ms").unwrap_or(0);
        // Let the accept queues and timers settle before timing anything.
        thread::sleep(Duration::from_secs(1));
        Ok(Held { child, setup_ms, others: 0 })
    }
}

impl Held {
    /// Why the holder is no longer running, if it is not.
    fn gone(&mut self) -> Option<String> {
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
fn other_tcp_sockets(held: u64) -> u64 {
    Command::new("ss")
        .arg("-tan")
        .output()
        .map(|o| (o.stdout.iter().filter(|c| **c == b'\n').count() as u64).saturating_sub(1 + 2 * held))
        .unwrap_or(0)
}

/// A number field of a flat JSON line, without a JSON parser.
fn json_u64(line: &str, key: &str) -> Option<u64> {
    json_raw(line, key)?.trim_matches('"').parse::<f64>().ok().map(|f| f as u64)
}

fn json_raw<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').map(|i| i + 2)?
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

// ---------------------------------------------------------------- figures 1 and 4

fn snapshots(opts: &Opts, bins: &Bins, report: &mut Report) -> Result<()> {
    let ns = bins.netstat.to_string_lossy().to_string();
    let nt = bins.nettools.to_string_lossy().to_string();
    let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    // Does our display work at all? Checked once, so a missing feature reads
    // as "not measured: why" rather than as a time.
    let ours_an = time_once(&argv(&[&ns, "-an"])).err();
    let ours_ano = time_once(&argv(&[&ns, "-ano"])).err();
    for (label, e) in [("netstat -an", &ours_an), ("netstat -ano", &ours_ano)] {
        if let Some(e) = e {
            report.note(1, format!("{label} not measured: {e}"));
        }
    }
    let mut sizes = vec![1_000u64, 10_000];
    if opts.big {
        sizes.push(100_000);
    }
    let want1 = opts.figures.contains(&1);
    let want4 = opts.figures.contains(&4);

    let mut table1 = String::new();
    let mut mem_rows: Vec<(u64, Result<Mem, String>)> = Vec::new();
    if want4 {
        eprintln!("bench: figure 4, idle baseline");
        mem_rows.push((0, peak_rss(bins, &ours_ano)));
    }
    for &n in &sizes {
        eprintln!("bench: holding {n} connections");
        let plain_cmds = vec![
            ("netstat -an".to_string(), argv(&[&ns, "-an"])),
            ("ss -tan".to_string(), argv(&["ss", "-tan"])),
            ("net-tools netstat -tan".to_string(), argv(&[&nt, "-tan"])),
        ];
        let owner_cmds = vec![
            ("netstat -ano".to_string(), argv(&[&ns, "-ano"])),
            ("ss -tanp".to_string(), argv(&["ss", "-tanp"])),
            ("net-tools netstat -tanp".to_string(), argv(&[&nt, "-tanp"])),
        ];
        // The holder must outlive the step, or the times are of an emptier
        // machine: if it went (killed by someone else), do the step again once.
        let mut attempt = 0;
        let (mut held, timed) = loop {
            let mut held = Held::start(bins, n)?;
            held.others = other_tcp_sockets(n);
            if !want1 {
                break (held, None);
            }
            eprintln!("bench: figure 1 at {n} (held in {} ms)", held.setup_ms);
            let r = time_alternating(&plain_cmds, opts.runs, &mut held)
                .and_then(|p| Ok((p, time_alternating(&owner_cmds, opts.runs, &mut held)?)));
            match r {
                Ok(t) => break (held, Some(t)),
                Err(why) if attempt == 0 => {
                    eprintln!("bench: {why}; repeating the {n} step");
                    report.note(1, format!("{n}: step repeated: {why}"));
                    attempt += 1;
                }
                Err(why) => {
                    let failed = vec![Times { failure: Some(why), ..Times::default() }; 3];
                    break (held, Some((failed.clone(), failed)));
                }
            }
        };
        if let Some((mut plain, mut owners)) = timed {
            if let Some(e) = &ours_an {
                plain[0].failure = Some(e.clone());
            }
            if let Some(e) = &ours_ano {
                owners[0].failure = Some(e.clone());
            }
            let _ = writeln!(
                table1,
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                held.others,
                cell(&plain[0]),
                cell(&plain[1]),
                cell(&plain[2]),
                ratio_cell(&plain[1], &plain[0]),
                cell(&owners[0]),
                cell(&owners[1]),
                cell(&owners[2]),
                ratio_cell(&owners[1], &owners[0]),
            );
            for (label, t) in [("netstat -an", &plain[0]), ("netstat -ano", &owners[0])] {
                if t.failure.is_none() && (t.lines as u64) < 2 * n {
                    let _ = writeln!(
                        table1,
                        "\n> Warning: `{label}` printed {} lines at {n} connections (expected at least {}).\n",
                        t.lines,
                        2 * n
                    );
                }
            }
            let speed = |anchor: &Times, ours: &Times| match (anchor.failure.as_ref(), ours.failure.as_ref()) {
                (None, None) => format!("{:.2}x faster", median(&anchor.secs) / median(&ours.secs)),
                _ => "not measured".into(),
            };
            report.note(
                1,
                format!(
                    "{n}: -an vs ss -tan ({}): {}; -ano vs ss -tanp ({}): {}",
                    fmt_secs(median(&plain[1].secs)),
                    speed(&plain[1], &plain[0]),
                    fmt_secs(median(&owners[1].secs)),
                    speed(&owners[1], &owners[0])
                ),
            );
            if n == 100_000 {
                let met = |t: f64, r: Option<f64>| match r {
                    Some(r) if r >= t => format!("met ({r:.1}x)"),
                    Some(r) => format!("MISSED ({r:.2}x)"),
                    None => "not measured".into(),
                };
                let r = |a: &Times, o: &Times| {
                    (a.failure.is_none() && o.failure.is_none()).then(|| median(&a.secs) / median(&o.secs))
                };
                report.note(1, format!("target -ano ≥20x faster than ss -tanp at 100k: {}", met(20.0, r(&owners[1], &owners[0]))));
            }
            if n == *sizes.last().unwrap() {
                let r = (plain[0].failure.is_none() && plain[1].failure.is_none())
                    .then(|| median(&plain[1].secs) / median(&plain[0].secs));
                report.note(
                    1,
                    format!(
                        "target -an no slower than ss -tan (at {n}): {}",
                        match r {
                            Some(r) if r >= 1.0 => format!("met ({r:.2}x)"),
                            Some(r) => format!("MISSED ({r:.2}x)"),
                            None => "not measured".into(),
                        }
                    ),
                );
            }
        }
        if want4 {
            eprintln!("bench: figure 4 at {n}");
            let rss = peak_rss(bins, &ours_ano);
            mem_rows.push((n, held.gone().map_or(rss, Err)));
        }
        drop(held);
    }

    if want1 {
        let s = report.section(1);
        let _ = writeln!(
            s,
            "Wall time with stdout to a file on tmpfs; median (min–max, runs). \"Other TCP sockets\" were on the \
             machine besides the 2N held (other work's listeners, connections, TIME_WAIT); every command lists them \
             too. \"ss/ours\" is how many times faster \
             `netstat` is than `ss` (above 1: faster). Targets: `-an` no slower than `ss -tan`; `-ano` at 100k at \
             least 20x faster than `ss -tanp`. Commands slower than {} s get {SLOW_RUNS} runs.\n",
            SLOW.as_secs()
        );
        let _ = writeln!(
            s,
            "| connections | other TCP sockets | `netstat -an` | `ss -tan` | net-tools `netstat -tan` | ss/ours | `netstat -ano` | `ss -tanp` | net-tools `netstat -tanp` | ss/ours |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        s.push_str(&table1);
        if !opts.big {
            s.push_str("\n100k not measured: run without --no-100k.\n");
        }
    }
    if want4 {
        let base = mem_rows.first().and_then(|(_, r)| r.as_ref().ok().copied());
        let mib = |kb: u64| format!("{:.1} MiB", kb as f64 / 1024.0);
        let s = report.section(4);
        let _ = writeln!(
            s,
            "Peak RSS (VmHWM) of `netstat -ano 5` with stdout to /dev/null, sampled until it had run 12 s (two \
             redisplays). Target: at most 300 bytes per connection above the idle baseline (peak). The RSS when \
             it was stopped is beside it: start-up transients (BTF, program loading) can set the peak at small N.\n"
        );
        let _ = writeln!(s, "| connections | peak RSS | peak above idle | bytes per connection | RSS at the end | bytes per connection (end) |");
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let mut notes = Vec::new();
        for (n, r) in &mem_rows {
            match (r, base) {
                (Ok(m), Some(b)) if *n > 0 => {
                    let above = m.peak.saturating_sub(b.peak) * 1024;
                    let per = above as f64 / *n as f64;
                    let per_end = (m.last.saturating_sub(b.last) * 1024) as f64 / *n as f64;
                    let _ = writeln!(
                        s,
                        "| {n} | {} | {:.1} MiB | {per:.0} | {} | {per_end:.0} |",
                        mib(m.peak),
                        above as f64 / 1048576.0,
                        mib(m.last)
                    );
                    notes.push(format!(
                        "{n}: {per:.0} B/connection above idle ({})",
                        if per <= 300.0 { "target ≤300 met" } else { "target ≤300 MISSED" }
                    ));
                }
                (Ok(m), _) => {
                    let label = if *n == 0 { "idle".into() } else { n.to_string() };
                    let _ = writeln!(s, "| {label} | {} | – | – | {} | – |", mib(m.peak), mib(m.last));
                }
                (Err(e), _) => {
                    let label = if *n == 0 { "idle".into() } else { n.to_string() };
                    let _ = writeln!(s, "| {label} | not measured: {e} | – | – | – | – |");
                    if notes.is_empty() || ours_ano.is_none() {
                        notes.push(format!("{label}: not measured ({e})"));
                    }
                }
            }
        }
        for n in notes {
            report.note(4, n);
        }
    }
    Ok(())
}

fn ratio_cell(anchor: &Times, ours: &Times) -> String {
    if anchor.failure.is_some() || ours.failure.is_some() {
        return "–".into();
    }
    format!("{:.2}x", median(&anchor.secs) / median(&ours.secs))
}

/// Peak RSS in KiB of `netstat -ano 5` over 12 s.
/// Memory of one `netstat -ano 5` run, KiB.
#[derive(Clone, Copy)]
struct Mem {
    /// VmHWM: the peak, what the target is about.
    peak: u64,
    /// VmRSS when it was stopped: the live table without start-up transients.
    last: u64,
}

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
    let status_path = format!("/proc/{}/status", child.id());
    let start = Instant::now();
    let (mut peak, mut last) = (0, 0);
    let mut exited = None;
    while start.elapsed() < Duration::from_secs(12) {
        if let Ok(Some(s)) = child.try_wait() {
            exited = Some(s);
            break;
        }
        let status = fs::read_to_string(&status_path).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        };
        if let (Some(hwm), Some(rss)) = (field("VmHWM:"), field("VmRSS:")) {
            peak = peak.max(hwm);
            last = rss;
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
    Ok(Mem { peak, last })
}

// ---------------------------------------------------------------- churn and tracers

/// One churn run's outcome.
#[derive(Clone, Default)]
struct Churn {
    connections: u64,
    rate: f64,
    errors: u64,
}

fn churn(bins: &Bins, seconds: u64, rate: u64, processes: u32) -> Result<Churn> {
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
    Ok(Churn {
        connections: json_u64(line, "connections").context("churn printed no count")?,
        rate: json_raw(line, "rate").and_then(|r| r.parse().ok()).unwrap_or(0.0),
        errors: json_u64(line, "errors").unwrap_or(0),
    })
}

/// A tracer running beside a workload.
struct Tracer {
    child: Child,
    stderr: Option<thread::JoinHandle<String>>,
}

#[derive(Clone, Copy, PartialEq)]
enum TracerKind {
    Netstat { ring: Option<u64> },
    Bpftrace(&'static str),
}

impl Tracer {
    /// Start with stdout to /dev/null (or piped, for latency), and wait until
    /// its programs are attached: BPF link and perf-event fds stop appearing.
    fn start(bins: &Bins, kind: TracerKind, stdout: Stdio) -> Result<Tracer, String> {
        let mut cmd = match kind {
            TracerKind::Netstat { ring } => {
                let mut c = Command::new(&bins.netstat);
                c.args(["--stream", "--json"]);
                if let Some(r) = ring {
                    c.args(["--ring-size", &r.to_string()]);
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
    fn finish(mut self) -> (u64, String) {
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

fn tracer_label(k: TracerKind) -> String {
    match k {
        TracerKind::Netstat { ring: None } => "netstat --stream --json >/dev/null".into(),
        TracerKind::Netstat { ring: Some(r) } => format!("netstat --stream --json --ring-size {r} >/dev/null"),
        TracerKind::Bpftrace(s) => format!("bpftrace bench/{s} >/dev/null"),
    }
}

/// Default ring size of `netstat --stream`, from its help text.
fn default_ring(bins: &Bins) -> Option<u64> {
    let out = Command::new(&bins.netstat).arg("--help").output().ok()?;
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let line = help.lines().find(|l| l.contains("--ring-size"))?;
    line.split("[default: ").nth(1)?.split(']').next()?.trim().parse().ok()
}

fn kib(b: u64) -> String {
    if b >= 1 << 20 { format!("{} MiB", b >> 20) } else { format!("{} KiB", b >> 10) }
}

// ---------------------------------------------------------------- figure 2

fn loss(_opts: &Opts, bins: &Bins, s: &mut String, notes: &mut Vec<String>) -> Result<()> {
    eprintln!("bench: figure 2, loss under maximum churn");
    let default = default_ring(bins);
    let run = |ring: Option<u64>, seconds: u64| -> Result<(Churn, u64), String> {
        wait_idle();
        let t = Tracer::start(bins, TracerKind::Netstat { ring }, Stdio::null())?;
        let c = churn(bins, seconds, 0, 2).map_err(|e| format!("{e:#}"))?;
        let (lost, _) = t.finish();
        eprintln!("bench:   ring {:?}: {} connections, {lost} lost", ring.or(default), c.connections);
        Ok((c, lost))
    };
    let main = run(None, 10);
    match &main {
        Err(e) => {
            let _ = writeln!(s, "Not measured: `netstat --stream --json` {e}.");
            notes.push(format!("not measured: {e}"));
            return Ok(());
        }
        Ok((c, lost)) => {
            let events = c.connections * EVENTS_PER_CONN;
            let _ = writeln!(
                s,
                "Maximum churn (`netstat-load churn --processes 2`) for 10 s with the default ring ({}): {} connections \
                 ({:.0}/s, {} failed connects, about {} events), **{lost} events lost** ({:.3}%). Target: zero.\n",
                default.map(kib).unwrap_or_else(|| "default".into()),
                c.connections,
                c.rate,
                c.errors,
                events,
                100.0 * *lost as f64 / events.max(1) as f64
            );
            notes.push(
                format!("{lost} lost of ~{events} events at {:.0} conn/s, default ring ({})", c.rate, if *lost == 0 { "target met" } else { "target MISSED" }),
            );
        }
    }
    // Where do losses start? Halve the ring (5 s runs) until they do, or,
    // if the default already loses, grow it until they stop.
    let Some(default) = default else {
        let _ = writeln!(s, "Ring sweep not run: the default ring size could not be read from `netstat --help`.");
        return Ok(());
    };
    let lost_default = main.as_ref().map(|(_, l)| *l).unwrap_or(0);
    let _ = writeln!(s, "| ring size | connections (5 s) | events lost |\n|---|---|---|");
    let mut first_loss = None;
    let mut ring = default;
    let mut tried = Vec::new();
    for _ in 0..5 {
        ring = if lost_default == 0 { ring / 4 } else { ring * 4 };
        // A page at least; past 1 GiB a bigger ring only hides a slow reader.
        if !(4096..=1 << 30).contains(&ring) {
            break;
        }
        tried.push(ring);
        match run(Some(ring), 5) {
            Ok((c, lost)) => {
                let _ = writeln!(s, "| {} | {} | {lost} |", kib(ring), c.connections);
                if (lost > 0) == (lost_default == 0) {
                    first_loss = Some(ring);
                    break;
                }
            }
            Err(e) => {
                let _ = writeln!(s, "| {} | not measured: {e} | |", kib(ring));
                break;
            }
        }
    }
    let line = match (first_loss, lost_default) {
        (Some(r), 0) => format!("losses start at a {} ring", kib(r)),
        (Some(r), _) => format!("losses stop at a {} ring", kib(r)),
        (None, 0) => format!("no losses down to a {} ring", kib(tried.last().copied().unwrap_or(default))),
        (None, _) => format!(
            "losses at every ring size tried, up to {}: the reader, not the ring, is the limit",
            kib(tried.last().copied().unwrap_or(default))
        ),
    };
    let _ = writeln!(s, "\n{}.", capitalise(&line));
    notes.push(line);
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

// ---------------------------------------------------------------- figure 3

fn overhead(opts: &Opts, bins: &Bins, s: &mut String, notes: &mut Vec<String>) -> Result<()> {
    eprintln!("bench: figure 3, churn overhead");
    let variants: [Option<TracerKind>; 4] = [
        None,
        Some(TracerKind::Netstat { ring: None }),
        Some(TracerKind::Bpftrace("tcpstates.bt")),
        Some(TracerKind::Bpftrace("tcpcount.bt")),
    ];
    let runs = opts.runs.min(3);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut lost = vec![0u64; variants.len()];
    let mut events = vec![0u64; variants.len()];
    let mut failure: Vec<Option<String>> = vec![None; variants.len()];
    for round in 0..runs {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            if failure[i].is_some() {
                continue;
            }
            wait_idle();
            let tracer = match variants[i] {
                None => None,
                Some(kind) => match Tracer::start(bins, kind, Stdio::null()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("bench:   {}: {e}", tracer_label(kind));
                        failure[i] = Some(e);
                        continue;
                    }
                },
            };
            let c = churn(bins, opts.churn_seconds, 0, 2)?;
            if let Some(t) = tracer {
                lost[i] += t.finish().0;
            }
            eprintln!("bench:   {:<48} {:.0} conn/s", variants[i].map(tracer_label).unwrap_or("untraced".into()), c.rate);
            rates[i].push(c.rate);
            events[i] += c.connections * EVENTS_PER_CONN;
        }
    }
    let base = median(&rates[0]);
    let _ = writeln!(
        s,
        "Maximum churn (`netstat-load churn --processes 2`, {} s per run, {runs} runs each, alternated) with nothing \
         tracing, with `netstat --stream --json >/dev/null`, with `bpftrace bench/tcpstates.bt >/dev/null` (the same \
         tracepoint, printing the same fields) and with `bpftrace bench/tcpcount.bt` (an in-kernel count only: the \
         cost of the tracepoint itself). Target: netstat at least 0.80x of untraced with zero loss.\n",
        opts.churn_seconds
    );
    let _ = writeln!(s, "| tracer | connections/s, median (min–max) | vs untraced | events lost |\n|---|---|---|---|");
    for (i, v) in variants.iter().enumerate() {
        let label = v.map(tracer_label).unwrap_or("untraced".into());
        if let Some(e) = &failure[i] {
            let _ = writeln!(s, "| `{label}` | not measured: {e} | – | – |");
            notes.push(format!("{label}: not measured ({e})"));
            continue;
        }
        let (lo, hi) = spread(&rates[i]);
        let m = median(&rates[i]);
        let lost_cell = if v.is_none() { "–".to_string() } else { format!("{} of ~{}", lost[i], events[i]) };
        let _ = writeln!(s, "| `{label}` | {m:.0} ({lo:.0}–{hi:.0}) | {:.2}x | {lost_cell} |", m / base);
        if v.is_some() {
            notes.push(format!("{label}: {:.2}x of untraced ({m:.0} vs {base:.0} conn/s), {} lost", m / base, lost[i]));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- figure 5

/// Nanoseconds since the epoch of an RFC 3339 UTC time like
/// `2026-11-23T22:28:12.486369874Z`.
fn parse_rfc3339(t: &str) -> Option<i128> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.strip_suffix('Z')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (h.next()?.ok()?, h.next()?.ok()?, h.next()?.ok()?);
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let ns: i64 = frac.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + hh * 3600 + mm * 60 + ss) as i128) * 1_000_000_000 + ns as i128)
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

fn latency(opts: &Opts, bins: &Bins, s: &mut String, notes: &mut Vec<String>) -> Result<()> {
    eprintln!("bench: figure 5, latency");
    let loads = [("light", 200u64, 1u32), ("heavy", 0, 2)];
    let _ = writeln!(
        s,
        "`netstat --stream --json` read line by line through a pipe; latency = the time the line was read minus \
         its `time` field (when the kernel saw the transition, CLOCK_REALTIME), for one line in {LATENCY_SAMPLE} \
         (the lines of the churn's processes only). Light: 200 connections/s from one process; heavy: maximum \
         churn from two. {} s each. Events lost are netstat's own count.\n",
        opts.churn_seconds
    );
    let _ = writeln!(s, "| churn | lines timed | median | p99 | max | events lost |\n|---|---|---|---|---|---|");
    for (label, rate, procs) in loads {
        wait_idle();
        let mut t = match Tracer::start(bins, TracerKind::Netstat { ring: None }, Stdio::piped()) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(s, "| {label} | not measured: `netstat --stream --json` {e} | | | | |");
                notes.push(format!("{label}: not measured ({e})"));
                continue;
            }
        };
        let out = t.child.stdout.take().unwrap();
        let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
        let bad = Arc::new(Mutex::new(0u64));
        let reader = {
            let (samples, bad) = (samples.clone(), bad.clone());
            thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, out);
                let mut line = Vec::with_capacity(512);
                let mut local = Vec::new();
                // xtask is built without optimisation: parsing every line of a
                // heavy stream would make this reader the bottleneck (netstat
                // would block on the pipe and lose events). Every line is read
                // as it arrives; one in SAMPLE is timed.
                let mut seen = 0u64;
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    seen += 1;
                    if !seen.is_multiple_of(LATENCY_SAMPLE) {
                        continue;
                    }
                    let read_at = now_ns();
                    let text = String::from_utf8_lossy(&line);
                    if !text.contains("\"bench-churn") {
                        continue;
                    }
                    match json_raw(&text, "time").and_then(|t| parse_rfc3339(t.trim_matches('"'))) {
                        Some(t) => local.push((read_at - t) as f64 / 1e9),
                        None => *bad.lock().unwrap() += 1,
                    }
                }
                samples.lock().unwrap().extend(local);
            })
        };
        // The tracer's own startup marker events are excluded by comm above.
        let c = churn(bins, opts.churn_seconds, rate, procs);
        let (lost, _) = t.finish();
        let _ = reader.join();
        let mut v = samples.lock().unwrap().clone();
        v.sort_by(|a, b| a.total_cmp(b));
        match c {
            Err(e) => {
                let _ = writeln!(s, "| {label} | churn failed: {e:#} | | | | |");
            }
            Ok(_) if v.is_empty() => {
                let why = if *bad.lock().unwrap() > 0 { "lines without a parsable \"time\"" } else { "no churn events seen" };
                let _ = writeln!(s, "| {label} | not measured: {why} | | | | |");
                notes.push(format!("{label}: not measured ({why})"));
            }
            Ok(_) => {
                let (med, p99, max) = (percentile(&v, 0.5), percentile(&v, 0.99), *v.last().unwrap());
                let _ = writeln!(s, "| {label} | {} | {} | {} | {} | {lost} |", v.len(), fmt_secs(med), fmt_secs(p99), fmt_secs(max));
                notes.push(format!("{label}: median {} p99 {} ({} events, {lost} lost)", fmt_secs(med), fmt_secs(p99), v.len()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_to_epoch_nanoseconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01.5Z"), Some(86_401_500_000_000));
        // date -u -d 2026-11-23T22:28:12Z +%s
        assert_eq!(parse_rfc3339("2026-11-23T22:28:12.000000001Z"), Some(1_795_472_892_000_000_001));
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn json_fields_without_a_parser() {
        let l = r#"{"connections":112490,"errors":0,"rate":37491.0,"time":"2026-11-23T22:28:12Z"}"#;
        assert_eq!(json_u64(l, "connections"), Some(112490));
        assert_eq!(json_u64(l, "rate"), Some(37491));
        assert_eq!(json_raw(l, "time"), Some("\"2026-11-23T22:28:12Z\""));
        assert_eq!(json_u64(l, "missing"), None);
    }

    #[test]
    fn losses_are_read_from_either_tracer() {
        assert_eq!(lost_in("netstat: 1234 kernel events lost (ring buffer 4096 bytes; raise --ring-size)\n"), 1234);
        assert_eq!(lost_in("Lost 10 events\nLost 5 events\n"), 15);
        assert_eq!(lost_in("Attaching 1 probe...\n"), 0);
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
    }
}
