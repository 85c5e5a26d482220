//! Timing commands: one run with stdout captured to tmpfs, and several
//! commands alternated round by round. Every run starts on an idle CPU.
use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{
    process::collect,
    sampling::wait_idle,
    stats::{Times, fmt_secs},
    workload::Held,
};

/// Where captured command output goes while timed (tmpfs: writing is cheap).
pub const OUT_FILE: &str = "/dev/shm/netstat-bench.out";
/// No single command may run longer than this.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// A command this slow gets fewer runs, to keep the bench near ten minutes.
pub const SLOW: Duration = Duration::from_secs(5);
pub const SLOW_RUNS: usize = 3;

/// Time one command with stdout captured to tmpfs; Err is why it failed.
pub fn time_once(argv: &[String]) -> Result<(f64, usize), String> {
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
pub fn time_alternating(cmds: &[(String, Vec<String>)], runs: usize, held: &mut Held) -> Result<Vec<Times>, String> {
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
