//! `cargo xtask bench-backends`: what each probe backend costs where several
//! exist (Debian's 6.1 and 6.12 under qemu; the build machines' kernel has
//! only the tracepoint path). The guest side is bench/backends.sh; this
//! boots the kernels through vm-test's machinery, parses its `bench:` lines
//! and writes bench/BACKENDS.md. Owns measurement only.
use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};

const SCRIPT: &str = include_str!("../../bench/backends.sh");

const USAGE: &str = "usage: cargo xtask bench-backends [--conns N] [--rounds N] [--kernel 6.1|6.12]... [--out PATH]

Boots each kernel once and runs the same loopback workload (netstat-load pair,
N connections) with no tracer and under `netstat --stream --json` with the
tracepoint, fentry and kprobe backends, alternated over the rounds; writes
medians to bench/BACKENDS.md.
  --conns N    connections per run (default 1500)
  --rounds N   rounds (default 5)
  --out PATH   where to write the results (default bench/BACKENDS.md)";

const BACKENDS: &[&str] = &["none", "tracepoint", "fentry", "kprobe"];

#[derive(Default, Clone, Copy)]
struct Sample {
    wall_cs: f64,
    cpu_jiffies: f64,
    events: f64,
    lost: f64,
    prog_ns: f64,
    prog_runs: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut conns, mut rounds, mut out) = (1500u32, 5u32, crate::root().join("bench/BACKENDS.md"));
    let mut vm_args: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--conns" => conns = val()?.parse().context("--conns")?,
            "--rounds" => rounds = val()?.parse().context("--rounds")?,
            "--out" => out = PathBuf::from(val()?),
            "--kernel" => {
                let k = val()?.clone();
                vm_args.extend(["--kernel".to_string(), k]);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    if conns == 0 || rounds == 0 {
        bail!("--conns and --rounds must be at least 1");
    }
    let exec = format!("BENCH_CONNS={conns}\nBENCH_ROUNDS={rounds}\n{SCRIPT}");
    // One VM per kernel runs every backend itself, so they share one boot;
    // one job at a time keeps the two VMs from competing for the host's CPUs.
    vm_args.extend(["--backend", "auto", "--jobs", "1", "--timeout", "3600", "--exec"].map(String::from));
    vm_args.push(exec);
    let outcomes = crate::vm::run_outcomes(&vm_args)?;

    let git = std::process::Command::new("git")
        .args(["-C", &crate::root().to_string_lossy(), "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut md = String::new();
    writeln!(md, "# Probe backends side by side\n")?;
    writeln!(
        md,
        "`cargo xtask bench-backends --conns {conns} --rounds {rounds}` at {git}: each kernel boots once under qemu (TCG, 2 vCPUs, \
         one host thread) and runs `netstat-load pair --count {conns}` (loopback connections opened and closed one after \
         another) with no tracer, then under `netstat --stream --json --backend B`, the backends alternated in every round. \
         Figures are medians over the rounds.\n"
    )?;
    writeln!(md, "- **wall**: the workload's elapsed time.")?;
    writeln!(
        md,
        "- **CPU**: CPU time of the whole guest during the workload (user, system, irq, softirq; the tracer's reader included), \
         and what the tracer added per connection over the no-tracer run."
    )?;
    writeln!(
        md,
        "- **BPF**: run time of our programs per invocation and per connection, from the kernel's own statistics \
         (`kernel.bpf_stats_enabled`); this excludes the attachment's dispatch cost (trampoline, kprobe int3/ftrace, \
         tracepoint call), which the CPU column includes."
    )?;
    writeln!(
        md,
        "- The guest CPU is emulated (about 5x slower than the host): compare rows, not absolute values.\n"
    )?;
    for o in &outcomes {
        let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
        let mut header = String::new();
        for line in &o.bench {
            if let Some(e) = line.strip_prefix("error ") {
                bail!("{}: {e}", o.release);
            }
            if let Some(h) = line.strip_prefix("start ") {
                header = h.to_string();
                continue;
            }
            let kv: BTreeMap<&str, &str> = line.split_whitespace().filter_map(|p| p.split_once('=')).collect();
            let Some(backend) = kv.get("backend").copied() else { continue };
            let Some(b) = BACKENDS.iter().find(|x| **x == backend) else { continue };
            let f = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
            samples.entry(b).or_default().push(Sample {
                wall_cs: f("wall_cs"),
                cpu_jiffies: f("cpu_jiffies"),
                events: f("events"),
                lost: f("lost"),
                prog_ns: f("prog_ns"),
                prog_runs: f("prog_runs"),
            });
        }
        if samples.is_empty() {
            bail!("{}: the guest printed no measurement (see its output above)", o.release);
        }
        if let Some((b, _)) = samples.iter().find(|(b, s)| **b != "none" && s.iter().any(|x| x.events < 1.0)) {
            bail!("{}: the {b} backend saw no event of the workload: not a measurement", o.release);
        }
        writeln!(md, "## {}\n", o.release)?;
        writeln!(md, "`{header}`\n")?;
        writeln!(
            md,
            "| backend | wall | CPU | CPU added per connection | BPF ns per run | BPF µs per connection | events | lost |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        let base_cpu = samples.get("none").map(|s| median(s.iter().map(|x| x.cpu_jiffies)));
        for b in BACKENDS {
            let Some(s) = samples.get(b) else { continue };
            let wall = median(s.iter().map(|x| x.wall_cs)) * 10.0;
            let cpu = median(s.iter().map(|x| x.cpu_jiffies)) * 10.0;
            let added = match base_cpu {
                Some(base) if *b != "none" => format!("{:.1} µs", (cpu - base * 10.0) * 1000.0 / conns as f64),
                _ => "-".into(),
            };
            let (per_run, per_conn, events, lost) = if *b == "none" {
                ("-".to_string(), "-".to_string(), "-".to_string(), "-".to_string())
            } else {
                (
                    format!("{:.0}", median(s.iter().map(|x| x.prog_ns / x.prog_runs.max(1.0)))),
                    format!("{:.1}", median(s.iter().map(|x| x.prog_ns / 1000.0 / conns as f64))),
                    format!("{:.0}", median(s.iter().map(|x| x.events))),
                    format!("{:.0}", median(s.iter().map(|x| x.lost))),
                )
            };
            writeln!(
                md,
                "| {b} | {wall:.0} ms | {cpu:.0} ms | {added} | {per_run} | {per_conn} | {events} | {lost} |"
            )?;
        }
        writeln!(md)?;
    }
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    print!("{md}");
    println!("written to {}", out.display());
    Ok(())
}

fn median(it: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = it.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}
