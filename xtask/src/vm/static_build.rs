//! The statically linked netstat, netstat-load and integration test binaries
//! that go into the guest, built with cargo and found through its JSON messages.
use std::{
    fs,
    io::BufReader,
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use super::elf::is_static_elf;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

pub struct StaticBins {
    pub netstat: PathBuf,
    pub netstat_load: PathBuf,
    /// Integration test executables (netstat-user/tests/*.rs).
    pub tests: Vec<TestBin>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub struct TestBin {
    pub name: String,
    pub exe: PathBuf,
    /// Its source uses the kernel-test helpers (`mod support;`, which pass
    /// NETSTAT_TEST_BACKEND to netstat) or the variable itself: it runs once
    /// per backend. The others run once per kernel.
    pub per_backend: bool,
}

/// The target and flags of the static build, for a cargo command: the host
/// suite builds its test binaries the same way (`cargo xtask test`), so the
/// guests' copies cost no second build.
pub fn static_flags(c: &mut std::process::Command) {
    c.args(["--target", TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
}

pub fn build_static() -> Result<StaticBins> {
    crate::bootstrap::ensure()?;
    let mut netstat = None;
    let mut netstat_load = None;
    let mut tests = Vec::new();
    // The host suite's selection (`cargo xtask test`), so cargo finds every
    // artifact built already; the bins come with the integration tests that
    // use them. `build --bins` runs only if they did not.
    for args in [
        &["test", "--no-run", "--workspace", "--exclude", "netstat-ebpf"][..],
        &["build", "--bins", "-p", "netstat-user"][..],
    ] {
        if args[0] == "build" && netstat.is_some() && netstat_load.is_some() {
            break;
        }
        let mut c = crate::cargo();
        c.args(args).args(["--release", "--message-format=json"]);
        static_flags(&mut c);
        c.stdout(Stdio::piped());
        let mut child = c.spawn().context("spawning cargo for the static build")?;
        let stdout = child.stdout.take().unwrap();
        for msg in cargo_metadata::Message::parse_stream(BufReader::new(stdout)) {
            let msg = msg.context("reading cargo's JSON messages")?;
            let cargo_metadata::Message::CompilerArtifact(a) = msg else { continue };
            let Some(exe) = a.executable else { continue };
            let exe = exe.into_std_path_buf();
            use cargo_metadata::TargetKind;
            if a.target.kind.contains(&TargetKind::Test) && a.package_id.repr.contains("netstat-user") {
                let src = fs::read_to_string(&a.target.src_path).unwrap_or_default();
                // Tests of what the guest has no part in (git, Python, Perl,
                // the install) say so in a line of their own.
                if src.lines().any(|l| l.trim().starts_with(HOST_ONLY)) {
                    continue;
                }
                let one_backend = src.lines().any(|l| l.trim().starts_with(ONE_BACKEND));
                let per_backend = !one_backend && (src.contains("mod support;") || src.contains("NETSTAT_TEST_BACKEND"));
                tests.push(TestBin { name: a.target.name.clone(), exe, per_backend });
            } else if a.target.kind.contains(&TargetKind::Bin) && !a.profile.test {
                match a.target.name.as_str() {
                    "netstat" => netstat = Some(exe),
                    "netstat-load" => netstat_load = Some(exe),
                    _ => {}
                }
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("static build (cargo {}) failed: {status}", args.join(" "));
        }
    }
    tests.sort();
    tests.dedup();
    let bins = StaticBins {
        netstat: netstat.context("cargo built no netstat binary")?,
        netstat_load: netstat_load.context("cargo built no netstat-load binary")?,
        tests,
    };
    if bins.tests.is_empty() {
        bail!("netstat-user has no integration tests (netstat-user/tests/*.rs) to run in the VMs");
    }
    for p in [&bins.netstat, &bins.netstat_load].into_iter().chain(bins.tests.iter().map(|t| &t.exe)) {
        if !is_static_elf(p) {
            bail!("{} is dynamically linked (RUSTFLAGS +crt-static was not applied)", p.display());
        }
    }
    Ok(bins)
}

/// The start of the line that keeps a test binary out of the guests, the
/// reason following in parentheses: its checks need tools only the host
/// has (git, a Python venv, Perl, PostgreSQL), or check no kernel at all.
pub const HOST_ONLY: &str = "//! vm: host only";

/// The start of the line that runs a kernel test binary once per kernel
/// (under the first backend, auto) instead of once per backend, the reason
/// following in parentheses: what it checks does not depend on which
/// mechanism a hook uses (each backend's events are held against the
/// tracepoint path's by tracer_backends, and each hook's mechanism by
/// probe_plan, under every backend).
pub const ONE_BACKEND: &str = "//! vm: one backend";
