//! Installs what the eBPF build needs when it is missing: the nightly
//! toolchain's rust-src and bpf-linker 0.10.3. Quick when both are there.
use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

pub const BPF_LINKER_VERSION: &str = "0.10.3";
const NIGHTLY: &str = "nightly";

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"))
}

/// PATH with `$CARGO_HOME/bin` in front, so a freshly installed bpf-linker is found.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths = vec![cargo_home().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

fn quiet(mut c: Command) -> Option<String> {
    let out = c.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ensure() -> Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn ensure_nightly() -> Result<()> {
    let mut c = Command::new("rustc");
    c.args([&format!("+{NIGHTLY}"), "--version"]);
    if quiet(c).is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing the nightly toolchain (for the eBPF build)");
    let mut c = Command::new("rustup");
    c.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]);
    crate::check(c)
}

fn ensure_rust_src() -> Result<()> {
    let mut c = Command::new("rustc");
    c.args([&format!("+{NIGHTLY}"), "--print", "sysroot"]);
    let sysroot = quiet(c).context("rustc +nightly --print sysroot")?;
    let core = PathBuf::from(sysroot.trim()).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if core.exists() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for {NIGHTLY} (needed by -Z build-std=core)");
    let mut c = Command::new("rustup");
    c.args(["component", "add", "rust-src", "--toolchain", NIGHTLY]);
    crate::check(c)
}

fn ensure_bpf_linker() -> Result<()> {
    let mut c = Command::new("bpf-linker");
    c.arg("--version").env("PATH", path_with_cargo_bin());
    if let Some(v) = quiet(c) {
        if v.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        eprintln!("xtask: found {} ; installing bpf-linker {BPF_LINKER_VERSION}", v.trim());
    } else {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (a few minutes, once)");
    }
    let mut c = Command::new("cargo");
    c.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force"]);
    crate::check(c)?;
    let mut c = Command::new("bpf-linker");
    c.arg("--version").env("PATH", path_with_cargo_bin());
    match quiet(c) {
        Some(v) if v.contains(BPF_LINKER_VERSION) => Ok(()),
        _ => bail!("bpf-linker {BPF_LINKER_VERSION} is still not on PATH after cargo install"),
    }
}

/// A command on PATH, or (when `cmd` holds a space) a shell probe that
/// succeeds, e.g. `perl -MParse::Netstat -e 1` for a library package.
pub fn have(cmd: &str) -> bool {
    let probe = if cmd.contains(' ') { cmd.to_string() } else { format!("command -v {cmd}") };
    Command::new("sh")
        .args(["-c", &probe])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Install Debian packages for commands that are missing (idempotent, and
/// `apt-get update` only when an install finds no package lists).
pub fn ensure_commands(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted.iter().filter(|(cmd, _)| !have(cmd)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        crate::check({
            let mut c = Command::new("apt-get");
            c.args(["update", "-qq"]);
            c
        })?;
        if !install() {
            bail!("apt-get install {} failed", missing.join(" "));
        }
    }
    Ok(())
}

/// Commands the test suite runs beside netstat (comparisons and checks).
pub const TEST_COMMANDS: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("ss", "iproute2"),
    ("ip", "iproute2"),
    ("setpriv", "util-linux"),
    ("capsh", "libcap2-bin"),
    // tests/machine_consumers.rs: jc goes into a venv of Debian's python3
    // (the test installs it from PyPI), Parse::Netstat from Debian.
    ("/usr/bin/python3 -c 'import ensurepip, venv'", "python3-venv"),
    ("perl -MParse::Netstat -e 1", "libparse-netstat-perl"),
    // tests/server_postgres.rs: a real PostgreSQL (initdb, pg_ctl, psql too).
    ("/usr/lib/postgresql/15/bin/pgbench", "postgresql-15"),
    // tests/fleet.rs: the TLS test's certificates.
    ("openssl", "openssl"),
];

/// What the kernel tests need from the host: tracefs mounted. Best effort:
/// tests that need it fail with their own message when it is missing.
pub fn prepare_kernel_env() {
    if !std::path::Path::new("/sys/kernel/tracing/events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
}
