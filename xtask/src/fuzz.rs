//! `cargo xtask fuzz [SECONDS]`: every cargo-fuzz target for a bounded time
//! (nightly, libFuzzer), and the test suite's short, repeatable pass.
//! Installs cargo-fuzz when missing. A crash fails the run and leaves its
//! input under fuzz/artifacts/<target>/ to turn into a regression test.
//! Never writes to fuzz/seeds/ (committed: the inputs every pass replays).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{bootstrap, check, root};

/// Every cargo-fuzz target, with the number of inputs the test suite's pass
/// runs on it: about 10 s each on the build machines (2 shared cores; the
/// targets differ by 400x in speed: proc_files grows 64 KiB inputs).
pub const TARGETS: &[(&str, u64)] = &[
    ("btf", 40_000),
    ("tracefs_format", 25_000),
    ("ring_record", 60_000),
    ("cli", 3_000),
    ("netlink_diag", 100_000),
    ("proc_files", 250),
];

/// libFuzzer's seed in the test suite's pass.
const TEST_SEED: u64 = 1;

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

/// `cargo xtask fuzz [SECONDS]`: a fresh random seed every run, to find new
/// crashes; what it learns accumulates in fuzz/corpus/<target>/ (git-ignored).
/// `--test-pass` runs the test suite's repeatable pass alone.
pub fn run(args: &[String]) -> Result<()> {
    if args.first().is_some_and(|a| a == "--test-pass") {
        return repeatable_pass();
    }
    let seconds: u64 = match args.first() {
        Some(s) => s.parse().with_context(|| format!("fuzz: '{s}' is not a number of seconds"))?,
        None => 30,
    };
    let dir = root().join("fuzz");
    each_target(|t, _| {
        let corpus = dir.join("corpus").join(t);
        fs::create_dir_all(&corpus)?;
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        Ok((corpus, vec![format!("-max_total_time={seconds}")]))
    })?;
    println!("fuzz: {} targets ran {seconds} s each without a crash", TARGETS.len());
    Ok(())
}

/// The test suite's pass: the same inputs, in the same order, for every run
/// of a commit. libFuzzer adds what it finds to the first corpus directory
/// only, so that is an empty scratch directory made for this pass; the
/// committed seeds come second, read-only. A count of runs, not a time,
/// bounds it (a time would try more inputs on a faster machine).
pub fn repeatable_pass() -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("netstat-fuzz-{}", std::process::id()));
    let result = each_target(|t, runs| {
        let corpus = scratch.join(t);
        let _ = fs::remove_dir_all(&corpus);
        fs::create_dir_all(&corpus)?;
        eprintln!("xtask: fuzzing {t}: {runs} inputs from seed {TEST_SEED} over fuzz/seeds/{t}");
        Ok((corpus, vec![format!("-runs={runs}"), format!("-seed={TEST_SEED}")]))
    });
    let _ = fs::remove_dir_all(&scratch);
    result?;
    println!("fuzz: {} targets ran their fixed inputs (seed {TEST_SEED}) without a crash", TARGETS.len());
    Ok(())
}

/// Run every target with `setup(target, test runs)`'s (writable corpus,
/// libFuzzer options), then fuzz/seeds/<target>; fail if any crashed or if
/// a seed directory changed.
fn each_target(mut setup: impl FnMut(&str, u64) -> Result<(PathBuf, Vec<String>)>) -> Result<()> {
    bootstrap::ensure()?;
    ensure_cargo_fuzz()?;
    let dir = root().join("fuzz");
    let mut failed = Vec::new();
    for &(t, runs) in TARGETS {
        let (corpus, options) = setup(t, runs)?;
        let seeds = dir.join("seeds").join(t);
        let before = listing(&seeds);
        let status = Command::new("cargo")
            .current_dir(&dir)
            .env("PATH", bootstrap::path_with_cargo_bin())
            .args(["+nightly", "fuzz", "run", t])
            .arg(&corpus)
            .arg(&seeds)
            .args(["--", "-rss_limit_mb=2048", "-max_len=65536"])
            .args(&options)
            .status()
            .with_context(|| format!("running cargo fuzz run {t}"))?;
        if listing(&seeds) != before {
            bail!("fuzzing {t} changed {} (the seeds are committed and read-only)", seeds.display());
        }
        if !status.success() {
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {} (inputs under fuzz/artifacts/)", failed.join(", "));
    }
    Ok(())
}

/// Names and sizes of a directory's files, sorted.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
