//! The Debian kernels of the matrix: resolving each series to its current
//! image package, downloading it once into the cache, and keeping only the
//! kernel (as an ELF vmlinux when it can be extracted) and the few modules
//! the tests need. Never installs a kernel on the host.
use std::{
    fs,
    io::{Read as _, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::host::apt_update;

/// The kernels of the matrix: a Debian meta-package per series, resolved to
/// the current image package through `apt-cache depends`.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec { series: "6.1", meta: "linux-image-amd64" },
    KernelSpec { series: "6.12", meta: "linux-image-6.12-amd64" },
];

pub struct KernelSpec {
    pub series: &'static str,
    pub meta: &'static str,
}

pub struct Kernel {
    /// `uname -r` of the image, e.g. 6.1.0-56-amd64.
    pub release: String,
    /// ELF vmlinux when it could be extracted (boots ~3 s faster), else the bzImage.
    pub image: PathBuf,
    /// `MODULES`, uncompressed, loaded by /init.
    pub modules: Vec<PathBuf>,
}

/// Modules the tests need that Debian builds as modules (BPF itself needs
/// none): veth for the namespace tests. Paths under kernel/.
/// inet_diag, tcp_diag and udp_diag give sock_diag its TCP and UDP dumps
/// (the live table needs their socket cookies; `ss` needs them for `sk:`);
/// /init loads them in name order, inet_diag first as the others need it.
const MODULES: &[&str] = &["drivers/net/veth", "net/ipv4/inet_diag", "net/ipv4/tcp_diag", "net/ipv4/udp_diag"];
/// Marks a cache entry that holds everything this version of the xtask needs.
const CACHE_COMPLETE: &str = "complete-v3";

/// The image package the meta-package currently depends on.
pub fn resolve_package(spec: &KernelSpec) -> Option<String> {
    let out = Command::new("apt-cache").args(["depends", spec.meta]).stderr(Stdio::null()).output().ok()?;
    let prefix = format!("linux-image-{}.", spec.series);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with(&prefix))
        .map(str::to_string)
}

pub fn fetch_kernel(spec: &KernelSpec, cache: &Path) -> Result<Kernel> {
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
pub fn download_kernel(pkg: &str, dir: &Path) -> Result<()> {
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
pub fn extract_vmlinux(bz: &[u8]) -> Result<Vec<u8>> {
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
