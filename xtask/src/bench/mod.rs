//! `cargo xtask bench`: the figures of issues 6, 12, 16 and 17, each measured side by side
//! with its anchor in the same run (commands alternated, several runs, medians
//! and spread), written to bench/RESULTS.md. Owns measurement only: workloads
//! come from `netstat-load`, and every command is run as a user would run it.
//!
//! This file runs the figures listed in `figures::FIGURES` and writes the
//! page; a new figure is a new file in `figures/` and one row there.
mod figures;
mod machine;
mod options;
mod process;
mod prog_stats;
mod report;
mod sampling;
mod stats;
mod timing;
mod tracer;
mod workload;

use std::{fs, path::PathBuf, time::Instant};

use anyhow::{Context as _, Result, bail};

use options::{Bins, Opts};
use report::Report;

/// Commands the comparisons need, with their Debian packages.
const BENCH_COMMANDS: &[(&str, &str)] = &[
    ("ss", "iproute2"),
    ("netstat", "net-tools"),
    ("bpftrace", "bpftrace"),
    ("hyperfine", "hyperfine"),
    ("bpftool", "bpftool"),
    ("python3", "python3"),
    // Figure 8: a PostgreSQL server of its own, and psql to count.
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
    ("psql", "postgresql-client-15"),
];

pub fn run(args: &[String]) -> Result<()> {
    let Some(opts) = Opts::parse(args)? else { return Ok(()) };
    if !process::is_root() {
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
        netstat: opts.netstat.clone().unwrap_or_else(|| target.join("release/netstat")),
        load: target.join("release/netstat-load"),
        nettools: process::which("netstat").context("net-tools netstat not found on PATH")?,
    };

    let started = Instant::now();
    let mut report = Report { machine: machine::describe(), ..Default::default() };
    if let Some(p) = &opts.netstat {
        for (k, v) in &mut report.machine {
            if k == "netstat" {
                *v = format!("{} (--netstat)", p.display());
            }
        }
    }
    figures::run(&opts, &bins, &mut report)?;
    // A run of some figures keeps the others' sections from the page it replaces.
    if opts.only.is_some()
        && let Ok(old) = fs::read_to_string(&opts.out)
    {
        report.keep_from(&old, |n| !opts.wants(n));
    }
    let _ = fs::remove_file(timing::OUT_FILE);
    report.elapsed = started.elapsed();
    let md = report.markdown(&opts, figures::FIGURES.iter().map(|f| (f.number, f.title)));
    if let Some(dir) = opts.out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&opts.out, &md).with_context(|| format!("writing {}", opts.out.display()))?;
    println!("\n{}", report.summary());
    println!("bench: wrote {} in {:.0} s", opts.out.display(), report.elapsed.as_secs_f64());
    Ok(())
}
