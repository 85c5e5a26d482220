//! `cargo xtask fuzz [SECONDS]`: every cargo-fuzz target for a bounded time
//! (nightly, libFuzzer). Installs cargo-fuzz when missing. A crash fails the
//! run and leaves its input under fuzz/artifacts/<target>/ to turn into a
//! regression test.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{bootstrap, check, root};

pub const TARGETS: &[&str] = &["btf", "tracefs_format", "ring_record", "cli", "netlink_diag", "proc_files"];

fn ensure_cargo_fuzz() -> Result<()> {
    let ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .env("PATH", bootstrap::path_with_cargo_bin())
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (once)");
    let mut c = Command::new("cargo");
    c.args(["install", "cargo-fuzz", "--locked"]);
    check(c)
}

/// `cargo xtask fuzz [SECONDS]`: a fresh random seed every run, to find new crashes.
pub fn run(args: &[String]) -> Result<()> {
    let seconds: u64 = match args.first() {
        Some(s) => s.parse().with_context(|| format!("fuzz: '{s}' is not a number of seconds"))?,
        None => 30,
    };
    pass(seconds, None)
}

/// One bounded pass over every target. The test suite passes a fixed `seed`
/// so that a commit's result does not depend on the luck of the run: the
/// same mutations are tried in the same order (replaying `fuzz/seeds`, where
/// every crash found so far is kept), and new crashes are the job of `run`.
pub fn pass(seconds: u64, seed: Option<u64>) -> Result<()> {
    bootstrap::ensure()?;
    ensure_cargo_fuzz()?;
    let dir = root().join("fuzz");
    let mut failed = Vec::new();
    for t in TARGETS {
        let corpus = dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        let status = Command::new("cargo")
            .current_dir(&dir)
            .env("PATH", bootstrap::path_with_cargo_bin())
            .args(["+nightly", "fuzz", "run", t])
            .arg(&corpus)
            .arg(dir.join("seeds").join(t))
            .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=2048", "-max_len=65536"])
            .args(seed.map(|s| format!("-seed={s}")))
            .status()
            .with_context(|| format!("running cargo fuzz run {t}"))?;
        if !status.success() {
            failed.push(*t);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {} (inputs under fuzz/artifacts/)", failed.join(", "));
    }
    println!("fuzz: {} targets ran {seconds} s each without a crash", TARGETS.len());
    Ok(())
}
