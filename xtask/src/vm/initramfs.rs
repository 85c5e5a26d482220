//! The guest's initramfs: busybox, /init (init.sh), netstat and the test
//! binaries, the kernels' modules, the fixtures at their host paths, and the
//! host tools the tests run with their shared libraries.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufWriter, Write},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use super::{cpio::Cpio, host::which, kernel::Kernel, options::Options, static_build::StaticBins};

/// Host tools the tests run beside netstat, copied in (at their host paths,
/// with their shared libraries) when present: busybox has no `ip netns`,
/// bpftool, ss, setpriv or capsh.
pub const HOST_TOOLS: &[&str] = &["bash", "ip", "ss", "bpftool", "setpriv", "capsh"];

// The busybox applets live in their own directory, last on PATH: installed
// into /bin they would replace /bin/netstat with busybox's own netstat.
const INIT: &str = include_str!("init.sh");

pub fn write_initramfs(path: &Path, bins: &StaticBins, kernels: &[Kernel], o: &Options) -> Result<()> {
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

pub fn add_tree<W: Write>(c: &mut Cpio<W>, dir: &Path) -> Result<()> {
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
pub fn shared_libs(exe: &Path) -> Vec<String> {
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
