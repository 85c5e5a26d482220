//! The vm-test command line: which kernels and backends, how many VMs at a
//! time, the guest's test arguments or the command it runs instead.
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::kernel::{KERNELS, KernelSpec};

/// What `cargo xtask test` runs: the backends a user gets without asking
/// (auto, and the tracepoint/cgroup path auto falls back to). The forced
/// fentry and kprobe forms fail the per-connection loss accounting and the
/// equivalence test (README, Probe backends: known defects); `--backend all`
/// or NETSTAT_VM_BACKENDS runs them.
pub const DEFAULT_BACKENDS: &[&str] = &["auto", "tracepoint"];
pub const BACKENDS: &[&str] = &["auto", "tracepoint", "fentry", "kprobe"];
/// Hard limit on one boot (boot, all test binaries, power-off).
const DEFAULT_TIMEOUT_SECS: u64 = 1500;

pub struct Options {
    pub kernels: Vec<&'static KernelSpec>,
    pub backends: Vec<String>,
    pub jobs: usize,
    pub smp: usize,
    pub timeout: Duration,
    pub test_args: Vec<String>,
    pub selftest: Option<String>,
    /// A shell command run in the guest instead of the tests (debugging).
    pub exec: Option<String>,
}

const USAGE: &str = "usage: cargo xtask vm-test [--kernel 6.1|6.12]... [--backend auto|tracepoint|fentry|kprobe|all]...
                          [--jobs N] [--smp N] [--timeout SECS] [--exec 'SHELL CMD'] [-- TEST-ARGS]
Boots each kernel once per backend with the statically linked netstat-user
integration tests in an initramfs (--exec runs a command there instead). Kernels are cached in $NETSTAT_VM_CACHE
(default <workspace>/.vmcache). TEST-ARGS go to every test binary (no spaces).
Default backends: auto and tracepoint, or the comma-separated list in $NETSTAT_VM_BACKENDS.
Test binaries that use tests/support (NETSTAT_TEST_BACKEND) run under every
backend, unless they say `//! vm: one backend (REASON)`; the others once per
kernel. `//! vm: host only (REASON)` keeps a test binary out of the guests.";

pub fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        kernels: Vec::new(),
        backends: Vec::new(),
        // Each VM is one host thread (see boot): one per core.
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        smp: 2,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        test_args: Vec::new(),
        selftest: None,
        exec: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--kernel" => {
                let v = value()?;
                let k = KERNELS
                    .iter()
                    .find(|k| k.series == v)
                    .with_context(|| format!("unknown kernel '{v}' (known: 6.1, 6.12)"))?;
                o.kernels.push(k);
            }
            "--backend" => {
                let v = value()?;
                if v == "all" {
                    o.backends.extend(BACKENDS.iter().map(|b| b.to_string()));
                } else if BACKENDS.contains(&v.as_str()) {
                    o.backends.push(v.clone());
                } else {
                    bail!("unknown backend '{v}' (known: {}, all)", BACKENDS.join(", "));
                }
            }
            "--jobs" => o.jobs = value()?.parse().context("--jobs")?,
            "--smp" => o.smp = value()?.parse().context("--smp")?,
            "--timeout" => o.timeout = Duration::from_secs(value()?.parse().context("--timeout")?),
            // Proves the failure paths: the guest panics or hangs instead of testing.
            "--selftest" => o.selftest = Some(value()?.clone()),
            "--exec" => o.exec = Some(value()?.clone()),
            "--" => {
                o.test_args.extend(it.by_ref().cloned());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    if o.kernels.is_empty() {
        o.kernels = KERNELS.iter().collect();
    }
    if o.backends.is_empty() {
        o.backends = match std::env::var("NETSTAT_VM_BACKENDS") {
            Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
            _ => DEFAULT_BACKENDS.iter().map(|s| s.to_string()).collect(),
        };
    }
    if o.test_args.iter().any(|a| a.contains(char::is_whitespace)) {
        bail!("TEST-ARGS must not contain spaces");
    }
    o.jobs = o.jobs.max(1);
    Ok(o)
}
