//! `cargo xtask vm-test`: the kernel test suite on Debian's 6.1 and 6.12 kernels
//! under qemu (TCG), once per probe backend. Owns fetching and caching the
//! kernels, the initramfs and the guest's /init; never installs a kernel on the host.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, BufWriter, Read as _, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The kernels of the matrix: a Debian meta-package per series, resolved to
/// the current image package through `apt-cache depends`.
const KERNELS: &[KernelSpec] = &[
    KernelSpec { series: "6.1", meta: "linux-image-amd64" },
    KernelSpec { series: "6.12", meta: "linux-image-6.12-amd64" },
];
const DEFAULT_BACKENDS: &[&str] = &["auto", "tracepoint", "fentry", "kprobe"];
const BACKENDS: &[&str] = &["auto", "tracepoint", "fentry", "kprobe"];
/// Hard limit on one boot (boot, all test binaries, power-off).
const DEFAULT_TIMEOUT_SECS: u64 = 900;
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Host tools the tests run beside netstat, copied in (at their host paths,
/// with their shared libraries) when present: busybox has no `ip netns`,
/// bpftool, ss, setpriv or capsh.
const HOST_TOOLS: &[&str] = &["bash", "ip", "ss", "bpftool", "setpriv", "capsh"];
/// isa-debug-exit: the guest writes its rc to this port, qemu exits with (rc << 1) | 1.
const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

struct KernelSpec {
    series: &'static str,
    meta: &'static str,
}

struct Options {
    kernels: Vec<&'static KernelSpec>,
    backends: Vec<String>,
    jobs: usize,
    smp: usize,
    timeout: Duration,
    test_args: Vec<String>,
    selftest: Option<String>,
    /// A shell command run in the guest instead of the tests (debugging).
    exec: Option<String>,
}

const USAGE: &str = "usage: cargo xtask vm-test [--kernel 6.1|6.12]... [--backend auto|tracepoint|fentry|kprobe|all]...
                          [--jobs N] [--smp N] [--timeout SECS] [--exec 'SHELL CMD'] [-- TEST-ARGS]
Boots each kernel once per backend with the statically linked netstat-user
integration tests in an initramfs (--exec runs a command there instead). Kernels are cached in $NETSTAT_VM_CACHE
(default <workspace>/.vmcache). TEST-ARGS go to every test binary (no spaces).
Default backends: all four, or the comma-separated list in $NETSTAT_VM_BACKENDS.
Test binaries that use tests/support (NETSTAT_TEST_BACKEND) run under every
backend; the others once per kernel.";

fn parse(args: &[String]) -> Result<Options> {
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

pub fn run(args: &[String]) -> Result<()> {
    run_outcomes(args).map(|_| ())
}

/// `run`, returning what each VM run printed as `bench:` lines.
pub fn run_outcomes(args: &[String]) -> Result<Vec<Outcome>> {
    let opts = parse(args)?;
    let started = Instant::now();
    ensure_host_packages()?;
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;

    let mut kernels = Vec::new();
    for spec in &opts.kernels {
        kernels.push(fetch_kernel(spec, &cache)?);
    }
    let t_build = Instant::now();
    let bins = build_static()?;
    let build_time = t_build.elapsed();

    let initramfs = cache.join(format!("initramfs-{}.cpio", std::process::id()));
    write_initramfs(&initramfs, &bins, &kernels, &opts)?;
    let _cleanup = RemoveOnDrop(initramfs.clone());

    // (kernel, backend, whether this run also has the backend-independent tests)
    let runs: Vec<(&Kernel, &str, bool)> = kernels
        .iter()
        .flat_map(|k| opts.backends.iter().enumerate().map(move |(i, b)| (k, b.as_str(), i == 0)))
        .collect();
    let t_vm = Instant::now();
    let results = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.min(runs.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((k, b, all)) = runs.get(i) else { break };
                    let r = boot(k, b, *all, &initramfs, &opts);
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let vm_time = t_vm.elapsed();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);

    println!("\nvm-test summary:");
    let mut failed = 0;
    for (i, r) in &results {
        let (k, b, _) = runs[*i];
        let verdict = match &r.verdict {
            Ok(()) => "PASS".to_string(),
            Err(e) => {
                failed += 1;
                format!("FAIL ({e})")
            }
        };
        println!(
            "  {:<24} {:<10} {:>6.1} s  {:>3} passed {:>3} failed  {verdict}",
            k.release, b, r.wall.as_secs_f64(), r.passed, r.failed
        );
    }
    println!("\nprobe plan per kernel and backend (--probe-report in the guest):");
    for (i, r) in &results {
        let (k, b, _) = runs[*i];
        for line in &r.probe_report {
            println!("  {:<24} {:<10} {line}", k.release, b);
        }
    }
    println!(
        "vm-test wall time: {:.0} s (static build {:.0} s, VMs {:.0} s, {} job(s), -smp {})",
        started.elapsed().as_secs_f64(),
        build_time.as_secs_f64(),
        vm_time.as_secs_f64(),
        opts.jobs,
        opts.smp
    );
    if failed > 0 {
        bail!("{failed} of {} VM runs failed", results.len());
    }
    Ok(results
        .into_iter()
        .map(|(i, r)| Outcome { release: runs[i].0.release.clone(), bench: r.bench })
        .collect())
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("NETSTAT_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join(".vmcache"))
}

// ---------------------------------------------------------------- host packages

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into(), "/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn on_path(bin: &str) -> bool {
    which(bin).is_some()
}

fn ensure_host_packages() -> Result<()> {
    let mut missing = Vec::new();
    if !on_path("qemu-system-x86_64") {
        missing.push("qemu-system-x86");
    }
    if !is_static_elf(Path::new("/bin/busybox")) {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)?;
    if !is_static_elf(Path::new("/bin/busybox")) {
        bail!("/bin/busybox is still not a static executable after installing busybox-static");
    }
    Ok(())
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    eprintln!("xtask: installing {} (apt-get)", pkgs.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return Ok(());
    }
    apt_update()?;
    if !install() {
        bail!("apt-get install {} failed", pkgs.join(" "));
    }
    Ok(())
}

fn apt_update() -> Result<()> {
    let mut c = Command::new("apt-get");
    c.arg("update");
    crate::check(c)
}

/// An ELF file without a PT_INTERP program header runs without a dynamic loader.
fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = fs::read(path) else { return false };
    elf_is_static(&data).unwrap_or(false)
}

fn elf_is_static(d: &[u8]) -> Option<bool> {
    if d.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?);
        if p_type == 3 {
            return Some(false);
        }
    }
    Some(true)
}

// ---------------------------------------------------------------- kernels

struct Kernel {
    /// `uname -r` of the image, e.g. 6.1.0-56-amd64.
    release: String,
    /// ELF vmlinux when it could be extracted (boots ~3 s faster), else the bzImage.
    image: PathBuf,
    /// `MODULES`, uncompressed, loaded by /init.
    modules: Vec<PathBuf>,
}

/// Modules the tests need that Debian builds as modules (BPF itself needs
/// none): veth for the namespace tests. Paths under kernel/.
const MODULES: &[&str] = &["drivers/net/veth"];
/// Marks a cache entry that holds everything this version of the xtask needs.
const CACHE_COMPLETE: &str = "complete-v2";

/// The image package the meta-package currently depends on.
fn resolve_package(spec: &KernelSpec) -> Option<String> {
    let out = Command::new("apt-cache").args(["depends", spec.meta]).stderr(Stdio::null()).output().ok()?;
    let prefix = format!("linux-image-{}.", spec.series);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with(&prefix))
        .map(str::to_string)
}

fn fetch_kernel(spec: &KernelSpec, cache: &Path) -> Result<Kernel> {
    let pkg = match resolve_package(spec) {
        Some(p) => Some(p),
        None => {
            // No package lists yet (fresh container): fetch them once.
            let _ = apt_update();
            resolve_package(spec)
        }
    };
    let pkg = match pkg {
        Some(p) => p,
        None => {
            // Offline: the newest cached image of this series will do.
            let prefix = format!("linux-image-{}.", spec.series);
            let mut cached: Vec<String> = fs::read_dir(cache)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix) && !n.contains(".partial"))
                .collect();
            cached.sort();
            cached.pop().with_context(|| {
                format!("cannot resolve {} with apt-cache and nothing is cached", spec.meta)
            })?
        }
    };
    let dir = cache.join(&pkg);
    if !dir.join(CACHE_COMPLETE).exists() {
        download_kernel(&pkg, &dir)?;
        // Debian moved on: the older images of this series are dead weight.
        let prefix = format!("linux-image-{}.", spec.series);
        for e in fs::read_dir(cache)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name != pkg && !name.contains(".partial") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let release = fs::read_to_string(dir.join("release"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| pkg.trim_start_matches("linux-image-").to_string());
    let vmlinux = dir.join("vmlinux");
    let image = if vmlinux.exists() { vmlinux } else { dir.join("vmlinuz") };
    let mut modules: Vec<PathBuf> = match fs::read_dir(dir.join("modules")) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    modules.sort();
    Ok(Kernel { release, image, modules })
}

/// `apt-get download` the image package and keep only /boot/vmlinuz and
/// the few `MODULES` from it.
fn download_kernel(pkg: &str, dir: &Path) -> Result<()> {
    eprintln!("xtask: fetching {pkg} (once; cached in {})", dir.display());
    let tmp = PathBuf::from(format!("{}.partial-{}", dir.display(), std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let download = || {
        Command::new("apt-get")
            .args(["download", pkg])
            .current_dir(&tmp)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        apt_update()?;
        if !download() {
            bail!("apt-get download {pkg} failed");
        }
    }
    let deb = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {pkg} left no .deb"))?;
    let mut tar_src = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning dpkg-deb")?;
    let mut patterns = vec!["./boot/vmlinuz-*".to_string()];
    patterns.extend(MODULES.iter().map(|m| format!("./lib/modules/*/kernel/{m}.ko*")));
    let status = Command::new("tar")
        .args(["-x", "--wildcards"])
        .args(&patterns)
        .current_dir(&tmp)
        .stdin(tar_src.stdout.take().unwrap())
        .status()
        .context("spawning tar")?;
    let src_status = tar_src.wait()?;
    if !status.success() || !src_status.success() {
        bail!("extracting /boot/vmlinuz-* from {} failed", deb.display());
    }
    let vmlinuz = fs::read_dir(tmp.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .with_context(|| format!("{} has no /boot/vmlinuz-*", deb.display()))?;
    let release = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    fs::rename(&vmlinuz, tmp.join("vmlinuz"))?;
    fs::write(tmp.join("release"), format!("{release}\n"))?;
    fs::remove_dir_all(tmp.join("boot"))?;
    fs::create_dir_all(tmp.join("modules"))?;
    for m in MODULES {
        let name = m.rsplit('/').next().unwrap_or(m);
        let base = tmp.join(format!("lib/modules/{release}/kernel/{m}.ko"));
        let out = tmp.join("modules").join(format!("{name}.ko"));
        if base.exists() {
            fs::rename(&base, &out)?;
            continue;
        }
        // Newer Debian kernels ship modules xz-compressed; busybox insmod wants them plain.
        let xz = base.with_extension("ko.xz");
        let plain = Command::new("xz").arg("-dc").arg(&xz).output().with_context(|| format!("xz -dc {}", xz.display()))?;
        if !plain.status.success() || plain.stdout.is_empty() {
            bail!("{pkg} has no usable {m}.ko");
        }
        fs::write(&out, plain.stdout)?;
    }
    let _ = fs::remove_dir_all(tmp.join("lib"));
    fs::remove_file(&deb)?;
    match extract_vmlinux(&fs::read(tmp.join("vmlinuz"))?) {
        Ok(elf) => fs::write(tmp.join("vmlinux"), elf)?,
        Err(e) => eprintln!("xtask: booting the bzImage of {pkg} (no ELF vmlinux: {e:#})"),
    }
    fs::write(tmp.join(CACHE_COMPLETE), "")?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    Ok(())
}

/// The ELF kernel inside a bzImage (qemu boots it directly through its PVH
/// note, skipping the in-guest decompression: about 3 s per boot under TCG).
fn extract_vmlinux(bz: &[u8]) -> Result<Vec<u8>> {
    let setup_sects = match *bz.get(0x1f1).context("short bzImage")? {
        0 => 4,
        n => n as usize,
    };
    let rd = |o: usize| -> Result<usize> {
        Ok(u32::from_le_bytes(bz.get(o..o + 4).context("short bzImage")?.try_into()?) as usize)
    };
    let start = (setup_sects + 1) * 512 + rd(0x248)?;
    let payload = bz.get(start..start + rd(0x24c)?).context("payload out of range")?;
    let tool: &[&str] = if payload.starts_with(b"\xfd7zXZ\x00") {
        &["xz", "-dc", "--single-stream"]
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        &["zstd", "-dcq"]
    } else if payload.starts_with(b"\x1f\x8b") {
        &["gzip", "-dc"]
    } else {
        bail!("unknown payload compression");
    };
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning {}", tool[0]))?;
    let mut stdin = child.stdin.take().unwrap();
    let input = payload.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut elf = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut elf)?;
    let _ = feeder.join();
    // Trailing bytes after the stream make some decompressors exit non-zero;
    // the ELF header and size decide.
    let _ = child.wait();
    if !elf.starts_with(b"\x7fELF") || elf.len() < (1 << 20) {
        bail!("{} did not produce an ELF kernel", tool[0]);
    }
    Ok(elf)
}

// ---------------------------------------------------------------- static build

struct StaticBins {
    netstat: PathBuf,
    netstat_load: PathBuf,
    /// Integration test executables (netstat-user/tests/*.rs).
    tests: Vec<TestBin>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct TestBin {
    name: String,
    exe: PathBuf,
    /// Its source uses the kernel-test helpers (`mod support;`, which pass
    /// NETSTAT_TEST_BACKEND to netstat) or the variable itself: it runs once
    /// per backend. The others run once per kernel.
    per_backend: bool,
}

fn build_static() -> Result<StaticBins> {
    crate::bootstrap::ensure()?;
    let mut netstat = None;
    let mut netstat_load = None;
    let mut tests = Vec::new();
    for args in [
        &["test", "--no-run"][..],
        &["build", "--bins"][..],
    ] {
        let mut c = crate::cargo();
        c.args(args)
            .args(["--release", "-p", "netstat-user", "--target", TARGET, "--message-format=json"])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stdout(Stdio::piped());
        let mut child = c.spawn().context("spawning cargo for the static build")?;
        let stdout = child.stdout.take().unwrap();
        for msg in cargo_metadata::Message::parse_stream(BufReader::new(stdout)) {
            let msg = msg.context("reading cargo's JSON messages")?;
            let cargo_metadata::Message::CompilerArtifact(a) = msg else { continue };
            let Some(exe) = a.executable else { continue };
            let exe = exe.into_std_path_buf();
            use cargo_metadata::TargetKind;
            if a.target.kind.contains(&TargetKind::Test) {
                let src = fs::read_to_string(&a.target.src_path).unwrap_or_default();
                let per_backend = src.contains("mod support;") || src.contains("NETSTAT_TEST_BACKEND");
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

// ---------------------------------------------------------------- initramfs

// The busybox applets live in their own directory, last on PATH: installed
// into /bin they would replace /bin/netstat with busybox's own netstat.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /busybox
/bin/busybox --install -s /busybox
export PATH=/bin:/usr/sbin:/usr/bin:/sbin:/busybox HOME=/root
mkdir -p /proc /sys /dev /tmp /run /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpffs /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
for m in /lib/modules/$(uname -r)/*.ko; do [ -e "$m" ] && insmod "$m"; done
# NETSTAT_TEST_VM: the guest CPU is emulated (about 5x slower than the host).
export NETSTAT_BIN=/bin/netstat NETSTAT_LOAD_BIN=/bin/netstat-load NETSTAT_TEST_VM=1
echo "netstat-vm: kernel $(uname -r), backend ${NETSTAT_TEST_BACKEND:-auto}, $(nproc) cpu(s)"
[ -z "$NETSTAT_VM_SELFTEST" ] && [ ! -x /etc/netstat-vm-exec ] &&
  /bin/netstat --probe-report --backend "${NETSTAT_TEST_BACKEND:-auto}" 2>&1 | sed 's/^/probe-report: /'
case "$NETSTAT_VM_SELFTEST" in
  panic) echo "netstat-vm: selftest: init exits (kernel panic)"; exit 1 ;;
  hang) echo "netstat-vm: selftest: hanging"; while :; do sleep 3600; done ;;
  fail) echo "netstat-vm: selftest: reporting failure"; rc=1 ;;
esac
rc=${rc:-0}
args=$(cat /etc/netstat-test-args)
if [ -x /etc/netstat-vm-exec ]; then
  /etc/netstat-vm-exec; rc=$?; NETSTAT_VM_SELFTEST=exec
fi
# Tests that do not depend on the backend run in the first run of a kernel only.
dirs=/tests/per-backend
[ "$NETSTAT_VM_ALL_TESTS" = 1 ] && dirs="/tests/once /tests/per-backend"
for t in $(for d in $dirs; do ls -d $d/* 2>/dev/null; done); do
  [ -n "$NETSTAT_VM_SELFTEST" ] && break
  echo "netstat-vm: running ${t##*/}"
  "$t" $args || rc=1
done
echo "netstat-vm: done, rc=$rc"
printf "\\$(printf %03o "$rc")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
"#;

/// A newc cpio archive, uncompressed (the kernel unpacks it fastest that way).
struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Cpio { out, ino: 1, dirs: BTreeSet::new() }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1,
            name.len() as u32 + 1, 0,
        ];
        self.ino += 1;
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())?;
        Ok(())
    }

    fn pad(&mut self, len: usize) -> Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0; 3][..n])?;
        Ok(())
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040755, (0, 0), &[])
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o100000 | mode, (0, 0), data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o120777, (0, 0), target.as_bytes())
    }

    fn host_file(&mut self, guest: &str, host: &Path, mode: u32) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, mode, &data)
    }

    fn finish(mut self) -> Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(())
    }
}

fn write_initramfs(path: &Path, bins: &StaticBins, kernels: &[Kernel], o: &Options) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut c = Cpio::new(BufWriter::new(f));
    for d in ["bin", "proc", "sys", "dev", "tmp", "run", "root", "etc", "tests"] {
        c.dir(d)?;
    }
    c.entry("dev/console", 0o020600, (5, 1), &[])?;
    c.host_file("bin/busybox", Path::new("/bin/busybox"), 0o755)?;
    c.symlink("bin/sh", "busybox")?;
    c.file("init", 0o755, INIT.as_bytes())?;
    c.file("etc/netstat-test-args", 0o644, o.test_args.join("\n").as_bytes())?;
    if let Some(cmd) = &o.exec {
        c.file("etc/netstat-vm-exec", 0o755, format!("#!/bin/sh\n{cmd}\n").as_bytes())?;
    }
    c.host_file("bin/netstat", &bins.netstat, 0o755)?;
    c.host_file("bin/netstat-load", &bins.netstat_load, 0o755)?;
    // Also where cargo built them: tests that use env!("CARGO_BIN_EXE_*")
    // directly find them there.
    c.symlink(&bins.netstat.to_string_lossy(), "/bin/netstat")?;
    c.symlink(&bins.netstat_load.to_string_lossy(), "/bin/netstat-load")?;
    for t in &bins.tests {
        let dir = if t.per_backend { "tests/per-backend" } else { "tests/once" };
        c.host_file(&format!("{dir}/{}", t.name), &t.exe, 0o755)?;
    }
    for k in kernels {
        for m in &k.modules {
            let name = m.file_name().unwrap_or_default().to_string_lossy();
            c.host_file(&format!("lib/modules/{}/{name}", k.release), m, 0o644)?;
        }
    }
    // Name lookups (tests bind their own copies over these in namespaces).
    for f in ["/etc/hosts", "/etc/services", "/etc/protocols", "/etc/nsswitch.conf", "/etc/resolv.conf"] {
        if Path::new(f).is_file() {
            c.host_file(f, Path::new(f), 0o644)?;
        }
    }
    // Tests find fixtures through CARGO_MANIFEST_DIR, a host path baked in at
    // compile time: mirror them at that same path.
    let fixtures = crate::root().join("netstat-user/tests/fixtures");
    if fixtures.is_dir() {
        add_tree(&mut c, &fixtures)?;
    }
    let mut libs = BTreeSet::new();
    for tool in HOST_TOOLS {
        let Some(p) = which(tool) else { continue };
        c.host_file(&p.to_string_lossy(), &p, 0o755)?;
        libs.extend(shared_libs(&p));
    }
    for lib in libs {
        c.host_file(&lib, Path::new(&lib), 0o755)?;
    }
    c.finish()
}

fn add_tree<W: Write>(c: &mut Cpio<W>, dir: &Path) -> Result<()> {
    c.dir(&dir.to_string_lossy())?;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let meta = fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            add_tree(c, &p)?;
        } else if meta.is_file() {
            c.host_file(&p.to_string_lossy(), &p, 0o644)?;
        } else if meta.file_type().is_symlink() {
            // /proc fixtures: fd/N -> socket:[INODE], exe -> /usr/sbin/...
            let target = fs::read_link(&p)?;
            c.symlink(&p.to_string_lossy(), &target.to_string_lossy())?;
        }
    }
    Ok(())
}

/// The libraries (and loader) a dynamic host tool needs, by the paths `ldd` gives.
fn shared_libs(exe: &Path) -> Vec<String> {
    let Ok(out) = Command::new("ldd").arg(exe).stderr(Stdio::null()).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=> ").map(|(_, r)| r).unwrap_or(l);
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------- boot

struct RunResult {
    verdict: Result<(), String>,
    wall: Duration,
    passed: u32,
    failed: u32,
    /// `netstat --probe-report` in the guest: what each hook chose.
    probe_report: Vec<String>,
    /// Lines a guest command (`--exec`) printed as `bench: ...`.
    bench: Vec<String>,
}

/// One VM run: its kernel and `bench:` lines (for bench-backends).
pub struct Outcome {
    pub release: String,
    pub bench: Vec<String>,
}

fn boot(k: &Kernel, backend: &str, all_tests: bool, initramfs: &Path, o: &Options) -> RunResult {
    let tag = format!("[{} {}]", k.release, backend);
    let started = Instant::now();
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 NETSTAT_TEST_BACKEND={backend} RUST_TEST_THREADS={}",
        std::env::var("RUST_TEST_THREADS").unwrap_or_else(|_| "2".into())
    );
    if let Some(s) = &o.selftest {
        append.push_str(&format!(" NETSTAT_VM_SELFTEST={s}"));
    }
    if all_tests {
        append.push_str(" NETSTAT_VM_ALL_TESTS=1");
    }
    let mut c = Command::new("qemu-system-x86_64");
    // One host thread for all vCPUs: with multi-threaded TCG, the kernel's
    // cross-CPU code patching (static keys flipped when a syscall tracepoint is
    // enabled) races with stale translations and oopses on int3 (seen on 6.12).
    c.args(["-accel", "tcg,thread=single", "-m", "1G", "-smp", &o.smp.to_string(), "-nic", "none"])
        .args(["-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-device", DEBUG_EXIT])
        .arg("-kernel")
        .arg(&k.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let fail = |msg: String| RunResult {
        verdict: Err(msg),
        wall: started.elapsed(),
        passed: 0,
        failed: 0,
        probe_report: Vec::new(),
        bench: Vec::new(),
    };
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => return fail(format!("spawning qemu-system-x86_64: {e}")),
    };
    println!("{tag} booting {}", k.image.display());
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn({
        let tag = tag.clone();
        move || {
            let (mut passed, mut failed) = (0, 0);
            let mut report = Vec::new();
            let mut bench = Vec::new();
            for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
                let line = clean(&line);
                if let Some(b) = line.strip_prefix("bench: ") {
                    bench.push(b.to_string());
                }
                if let Some(r) = line.strip_prefix("probe-report: ") {
                    if !r.starts_with("HOOK ") {
                        report.push(r.split_whitespace().collect::<Vec<_>>().join(" "));
                    }
                }
                if let Some(r) = line.strip_prefix("test result: ") {
                    let num = |what: &str| -> u32 {
                        r.split(';')
                            .find_map(|p| p.trim().strip_suffix(what))
                            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                            .unwrap_or(0)
                    };
                    passed += num("passed");
                    failed += num("failed");
                }
                println!("{tag} {line}");
            }
            (passed, failed, report, bench)
        }
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if started.elapsed() > o.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("timed out after {} s", o.timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => break Err(format!("waiting for qemu: {e}")),
        }
    };
    let (passed, failed, probe_report, bench) = reader.join().unwrap_or_default();
    let verdict = status.and_then(|s| match s.code() {
        Some(1) => Ok(()),
        Some(0) => Err("no exit status from the guest: kernel panic or early power-off".into()),
        Some(c) if c & 1 == 1 => Err(format!("guest tests failed (rc {})", c >> 1)),
        _ => Err(format!("qemu failed: {s}")),
    });
    let verdict = match verdict {
        Ok(()) if passed == 0 && o.selftest.is_none() && o.exec.is_none() => Err("no test ran".into()),
        v => v,
    };
    RunResult { verdict, wall: started.elapsed(), passed, failed, probe_report, bench }
}

/// A console line without terminal control sequences or carriage returns.
fn clean(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut buf = Vec::new();
        let mut c = Cpio::new(&mut buf);
        c.file("/a/b/c", 0o644, b"hello").unwrap();
        c.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("070701"));
        // a, a/b, a/b/c, trailer
        assert_eq!(text.matches("070701").count(), 4);
        assert!(text.contains("a/b/c\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }

    #[test]
    fn clean_strips_escapes() {
        assert_eq!(clean(b"\x1bc\x1b[?7l\x1b[2Jhello\r"), "hello");
    }

    #[test]
    fn this_test_binary_is_an_elf() {
        let exe = std::env::current_exe().unwrap();
        assert!(elf_is_static(&fs::read(exe).unwrap()).is_some());
    }
}
