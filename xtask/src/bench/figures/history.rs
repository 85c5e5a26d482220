//! Figure 7: the history recorder beside `--stream --json` into a file at
//! maximum churn (tracer CPU per connection, loss, records written against
//! the kernel's own count of connections, disk per connection), then the
//! queries over 10 million lifetimes written through the recorder's own
//! writer (`netstat-load history-fill`). Rows are counted with python3's
//! sqlite3, not with netstat.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::Section;
use crate::bench::{
    options::{Bins, Opts},
    process::{collect, stop},
    sampling::wait_idle,
    stats::{median, spread},
    workload::churn,
};

/// (ActiveOpens, PassiveOpens) from /proc/net/snmp: every TCP connection
/// end the kernel made.
fn tcp_opens() -> (u64, u64) {
    let snmp = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(vals)) = (tcp.next(), tcp.next()) else { return (0, 0) };
    let get = |k: &str| {
        names.split_whitespace().position(|n| n == k).and_then(|i| vals.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (get("ActiveOpens"), get("PassiveOpens"))
}

/// utime + stime of a process, in clock ticks (all its threads).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // Fields after the comm start at 3 (state): utime is 14, stime 15.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// Wait until the process has done its backlog: its CPU time stops growing.
fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = cpu_ticks(pid);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1000));
        let now = cpu_ticks(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

fn sqlite(db: &Path, query: &str) -> Result<String> {
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; d=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(d.execute(sys.argv[2]).fetchone()[0])"])
        .arg(db)
        .arg(query)
        .output()
        .context("python3")?;
    if !out.status.success() {
        bail!("sqlite3 {query}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

struct Run {
    us_per_conn: f64,
    rate: f64,
    lost: u64,
    /// Recorder: (rows written for the churn, connection ends the kernel made, bytes per row).
    rows: Option<(u64, u64, f64)>,
}

fn one_run(bins: &Bins, record: bool, scratch: &Path, seconds: u64) -> Result<Run> {
    wait_idle();
    let db = scratch.join("bench-history.db");
    let out = scratch.join("bench-stream.json");
    for p in [&db, &out] {
        let _ = fs::remove_file(p);
    }
    for ext in ["-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{ext}", db.display()));
    }
    let mut cmd = Command::new(&bins.netstat);
    if record {
        cmd.arg("--record").arg("--db").arg(&db).stdout(Stdio::null());
    } else {
        cmd.args(["--stream", "--json"]).stdout(fs::File::create(&out)?);
    }
    let mut child = cmd.stderr(Stdio::piped()).spawn().context("starting netstat")?;
    let err = collect(child.stderr.take().unwrap());
    let pid = child.id();
    // Attached, seeded and idle again.
    thread::sleep(Duration::from_secs(3));
    settle(pid);
    let t0 = cpu_ticks(pid);
    let started_us = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros()) as i64;
    let (a0, p0) = tcp_opens();
    let c = churn(bins, seconds, 0, 2)?;
    let (a1, p1) = tcp_opens();
    settle(pid);
    let ticks = cpu_ticks(pid) - t0;
    stop(&mut child);
    let stderr = err.join().unwrap_or_default();
    let lost = stderr
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.windows(3).find_map(|x| match x {
                [n, "kernel", "events"] => n.parse::<u64>().ok(),
                [n, "events", "lost"] => n.parse::<u64>().ok(),
                _ => None,
            })
        })
        .sum();
    let ends = (a1 - a0) + (p1 - p0);
    let us_per_conn = ticks as f64 / ticks_per_second() * 1e6 / (a1 - a0).max(1) as f64;
    let rows = if record {
        let n: u64 = sqlite(&db, &format!("SELECT count(*) FROM conns WHERE opened >= {started_us} AND (flags & 1) = 0 AND (flags & 8) = 0"))?.parse()?;
        let total: u64 = sqlite(&db, "SELECT count(*) FROM conns")?.parse()?;
        let bytes = fs::metadata(&db)?.len() + fs::metadata(format!("{}-wal", db.display())).map(|m| m.len()).unwrap_or(0);
        Some((n, ends, bytes as f64 / total.max(1) as f64))
    } else {
        None
    };
    for p in [&db, &out] {
        let _ = fs::remove_file(p);
    }
    Ok(Run { us_per_conn, rate: c.rate, lost, rows })
}

fn time_cmd(cmd: &mut Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd.output()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub fn measure(opts: &Opts, bins: &Bins, section: &mut Section) -> Result<()> {
    let Section { body: s, notes } = section;
    eprintln!("bench: figure 7, history");
    let scratch = PathBuf::from(std::env::var("NETSTAT_BENCH_SCRATCH").unwrap_or_else(|_| "/var/tmp".into()));
    let seconds = opts.churn_seconds.max(10);
    let runs = opts.runs.min(3);
    let (mut stream, mut rec): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
    for round in 0..runs {
        for k in 0..2 {
            let record = (k + round) % 2 == 1;
            let r = one_run(bins, record, &scratch, seconds)?;
            eprintln!("bench:   {}: {:.2} us/conn, {:.0} conn/s, {} lost", if record { "record" } else { "stream" }, r.us_per_conn, r.rate, r.lost);
            if record { rec.push(r) } else { stream.push(r) }
        }
    }
    let cpu = |v: &[Run]| v.iter().map(|r| r.us_per_conn).collect::<Vec<_>>();
    let rate = |v: &[Run]| v.iter().map(|r| r.rate).collect::<Vec<_>>();
    let (sc, rc) = (median(&cpu(&stream)), median(&cpu(&rec)));
    let _ = writeln!(
        s,
        "Maximum churn (`netstat-load churn --processes 2`, {seconds} s, {runs} runs each, alternated): tracer CPU \
         (utime+stime of the whole process, all threads, from the churn's start until its backlog is written) per \
         connection the kernel made (ActiveOpens), `netstat --record` against `netstat --stream --json > FILE`. \
         Records counted with python3's sqlite3 against the kernel's ActiveOpens + PassiveOpens (one record per \
         connection end). Targets: the recorder at no more CPU per connection than the stream, zero lost events, zero \
         dropped records, at most 150 bytes per record including indexes.\n"
    );
    let _ = writeln!(s, "| tracer | CPU µs/conn, median (min–max) | churn conn/s | events lost | records / connection ends | bytes per record |\n|---|---|---|---|---|---|");
    for (label, v) in [("netstat --stream --json > FILE", &stream), ("netstat --record", &rec)] {
        let (lo, hi) = spread(&cpu(v));
        let lost: u64 = v.iter().map(|r| r.lost).sum();
        let rows = v.iter().filter_map(|r| r.rows).map(|(n, e, b)| format!("{n} / {e}, {b:.0}")).collect::<Vec<_>>();
        let (rows_cell, bytes_cell) = if rows.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            let total: (u64, u64) = v.iter().filter_map(|r| r.rows).fold((0, 0), |a, (n, e, _)| (a.0 + n, a.1 + e));
            let b = median(&v.iter().filter_map(|r| r.rows.map(|x| x.2)).collect::<Vec<_>>());
            (format!("{} / {}", total.0, total.1), format!("{b:.0}"))
        };
        let _ = writeln!(s, "| `{label}` | {:.2} ({lo:.2}–{hi:.2}) | {:.0} | {lost} | {rows_cell} | {bytes_cell} |", median(&cpu(v)), median(&rate(v)));
    }
    let rec_lost: u64 = rec.iter().map(|r| r.lost).sum();
    let (made, written) = rec.iter().filter_map(|r| r.rows).fold((0, 0), |a, (n, e, _)| (a.0 + e, a.1 + n));
    notes.push(format!(
        "recorder {rc:.2} vs stream {sc:.2} µs/conn ({:.2}x, {}); {rec_lost} events lost; {written} records for {made} connection ends",
        rc / sc,
        if rc <= sc { "target met" } else { "target MISSED" }
    ));

    // Ten million lifetimes through the recorder's writer, then the queries.
    let n: u64 = std::env::var("NETSTAT_BENCH_HISTORY_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let db = scratch.join("bench-history-10m.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{ext}", db.display()));
    }
    let fill = Command::new(&bins.load).args(["history-fill", "--connections", &n.to_string(), "--db"]).arg(&db).output()?;
    if !fill.status.success() {
        bail!("history-fill: {}", String::from_utf8_lossy(&fill.stderr));
    }
    let f: serde_json::Value = serde_json::from_slice(&fill.stdout)?;
    let remote = f["sample_remote"].as_str().context("sample_remote")?.to_string();
    let at_us = f["sample_at_us"].as_i64().context("sample_at_us")?;
    let at = format!("@{}", at_us / 1_000_000);
    let at_rfc = String::from_utf8_lossy(&Command::new("date").args(["-u", "-d", &at, "+%Y-%m-%dT%H:%M:%SZ"]).output()?.stdout).trim().to_string();
    let mut remote_times = Vec::new();
    let mut at_times = Vec::new();
    let (mut remote_rows, mut at_rows) = (0usize, 0usize);
    for _ in 0..opts.runs.max(3) {
        let (t, out) = time_cmd(Command::new(&bins.netstat).args(["--history", "--json", "--remote", &remote, "--db"]).arg(&db))?;
        remote_rows = serde_json::from_str::<serde_json::Value>(&out)?["connections"].as_array().map_or(0, |a| a.len());
        remote_times.push(t);
        let (t, out) = time_cmd(Command::new(&bins.netstat).args(["-ano", "--json", "--at", &at_rfc, "--db"]).arg(&db))?;
        at_rows = serde_json::from_str::<serde_json::Value>(&out)?["connections"].as_array().map_or(0, |a| a.len());
        at_times.push(t);
    }
    let disk = fs::metadata(&db)?.len();
    let witness: u64 = sqlite(&db, &format!("SELECT count(*) FROM conns WHERE raddr = {}", u32::from(remote.parse::<std::net::Ipv4Addr>()?)))?.parse()?;
    let _ = writeln!(
        s,
        "\n{n} lifetimes written through the recorder's writer (`netstat-load history-fill`: {} distinct remote \
         addresses, half ending in TIME_WAIT, {:.0} rows/s in batches of 20,000), {:.1} bytes per row on disk with \
         its indexes. Wall time of the whole command (start, open, query, print), median of {} runs. Targets: \
         `--remote` ≤ 100 ms, `--at` ≤ 1 s.\n",
        4096,
        f["rows_per_second"].as_f64().unwrap_or(0.0),
        disk as f64 / n as f64,
        remote_times.len()
    );
    let _ = writeln!(s, "| query | rows | median (min–max) |\n|---|---|---|");
    let (lo, hi) = spread(&remote_times);
    let _ = writeln!(s, "| `netstat --history --json --remote {remote}` | {remote_rows} (sqlite3: {witness}) | {:.0} ms ({:.0}–{:.0}) |", median(&remote_times) * 1e3, lo * 1e3, hi * 1e3);
    let (lo, hi) = spread(&at_times);
    let _ = writeln!(s, "| `netstat -ano --json --at {at_rfc}` | {at_rows} | {:.0} ms ({:.0}–{:.0}) |", median(&at_times) * 1e3, lo * 1e3, hi * 1e3);
    notes.push(format!(
        "{n} rows: {:.0} B/row; --remote {:.0} ms ({}), --at {:.0} ms ({})",
        disk as f64 / n as f64,
        median(&remote_times) * 1e3,
        if median(&remote_times) <= 0.1 { "target met" } else { "target MISSED" },
        median(&at_times) * 1e3,
        if median(&at_times) <= 1.0 { "target met" } else { "target MISSED" }
    ));
    if remote_rows as u64 != witness {
        notes.push(format!("--remote returned {remote_rows} rows, sqlite3 counts {witness}: WRONG"));
    }
    for ext in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{ext}", db.display()));
    }
    Ok(())
}
