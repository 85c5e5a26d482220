//! `cargo xtask`: bootstrap the toolchain, build, run, test, bench.
//! Owns every step a newcomer or CI needs; each one installs what is missing
//! and is quick when everything is already there.
mod backends;
mod bench;
mod bless;
mod bootstrap;
mod fuzz;
mod install;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "usage: cargo xtask <command> [args]

commands:
  bootstrap          install what is missing (nightly rust-src, bpf-linker 0.10.3)
  build              bootstrap, then build target/release/netstat (eBPF object embedded)
  run [-- ARGS]      build, then run netstat with ARGS (needs root for tracing)
  test               build, then run the whole test suite (as root: kernel tests included),
                     then the kernel tests on Debian's 6.1 and 6.12 kernels (vm-test)
  vm-test [ARGS]     the kernel tests under qemu on 6.1 and 6.12, per backend (--help)
  fuzz [SECONDS]     run every cargo-fuzz target for SECONDS each (default 30; installs cargo-fuzz);
                     --test-pass: only the test suite's repeatable pass
  bench [ARGS]       the benchmark figures of issue 6 side by side; writes bench/RESULTS.md (--help)
  bench-backends [ARGS]
                     each probe backend's cost on 6.1 and 6.12 under qemu; writes bench/BACKENDS.md (--help)
  install [--prefix DIR]
                     build, then install bin/netstat, its man page (man8) and bash/zsh/fish
                     completions under DIR (default /usr/local)
  test-install       install the built binary into a scratch prefix and check man, bash, --version
  bless              rewrite the golden files of tests/cli_golden.rs from netstat's current output
                     (after a deliberate change; refused when CI is set)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "bootstrap" => {
            bootstrap::ensure()?;
            Ok(ExitCode::SUCCESS)
        }
        "build" => {
            build()?;
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            build()?;
            let rest: Vec<&String> = rest.iter().skip_while(|a| *a == "--").collect();
            let status = Command::new(root().join("target/release/netstat"))
                .args(rest)
                .status()
                .context("running target/release/netstat")?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
        "test" => {
            test(rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "fuzz" => {
            fuzz::run(rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "install" => {
            install::run(rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "test-install" => {
            build()?;
            install::self_test()?;
            Ok(ExitCode::SUCCESS)
        }
        "bench" => {
            bench::run(rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "bless" => {
            bless::run(rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "bench-backends" => {
            backends::run(rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "vm-test" => {
            vm::run(rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command '{other}'\n{USAGE}"),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A `cargo` command in the workspace, with bpf-linker on PATH.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c.env("PATH", bootstrap::path_with_cargo_bin());
    c
}

pub fn check(mut c: Command) -> Result<()> {
    let status = c.status().with_context(|| format!("spawning {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

pub fn build() -> Result<()> {
    bootstrap::ensure()?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "netstat-user", "--bins"]);
    check(c)
}

fn test(extra: &[String]) -> Result<()> {
    build()?;
    bootstrap::ensure_commands(bootstrap::TEST_COMMANDS)?;
    bootstrap::prepare_kernel_env();
    let mut c = cargo();
    // The eBPF crate builds only for the bpf target (through netstat-user's build.rs).
    c.args(["test", "--release", "--workspace", "--exclude", "netstat-ebpf"]);
    // Statically linked, as the VM suite's copies: built once for both.
    vm::static_flags(&mut c);
    c.args(extra);
    // Kernel tests share the machine's kernel; a few at a time keeps 2 cores responsive.
    c.env("RUST_TEST_THREADS", std::env::var("RUST_TEST_THREADS").unwrap_or_else(|_| "2".into()));
    check(c)?;
    // `cargo xtask install` into a scratch prefix, with the binary just built.
    install::self_test()?;
    // A short fuzz pass over every parser, the same inputs every run of a
    // commit (the open-ended one is `cargo xtask fuzz`).
    fuzz::repeatable_pass()?;
    // The same kernel tests on Debian's 6.1 and 6.12 kernels, once per probe
    // backend: auto and tracepoint (fentry and kprobe through
    // NETSTAT_VM_BACKENDS, which vm-test reads itself).
    vm::run(&[])
}
