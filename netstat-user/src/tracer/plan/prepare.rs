//! What is resolved before any program loads: BTF offsets, where tracefs
//! and the cgroup v2 root are, and which needs each hook has unmet.
use std::path::{Path, PathBuf};

use aya::Btf as AyaBtf;
use netstat_common::KernelOffsets;

use super::super::{TracerOptions, btf::Btf, offsets, tracefs};
use super::*;
use crate::{EnvError, cli::config::Backend};

/// Everything resolved before loading: offsets and where to attach.
pub struct Prepared {
    pub offsets: KernelOffsets,
    pub(super) resolved: offsets::Resolved,
    pub(super) tracefs: Result<PathBuf, String>,
    pub(super) cgroup2: Result<PathBuf, String>,
    /// We mounted cgroup2 ourselves (a mount namespace without it, such as
    /// `ip netns exec`): detach it once the programs are attached.
    pub(super) cgroup2_temp: bool,
    pub(super) backend: Backend,
    pub(super) btf_path: PathBuf,
    /// aya's parse of vmlinux BTF, which fentry/fexit loads need; parsed on
    /// first use only (about 2 s on a slow machine).
    pub(super) aya_btf: std::cell::OnceCell<Result<AyaBtf, String>>,
}

pub fn prepare(opts: &TracerOptions) -> anyhow::Result<Prepared> {
    let data = std::fs::read(&opts.btf_path).map_err(|e| {
        EnvError(format!(
            "no kernel BTF at {} ({e}): this kernel needs CONFIG_DEBUG_INFO_BTF for tracing",
            opts.btf_path.display()
        ))
    })?;
    let btf = Btf::parse(&data)
        .map_err(|e| EnvError(format!("kernel BTF at {} is unusable: {e}", opts.btf_path.display())))?;
    let tracefs = tracefs::locate(&opts.proc_root).map_err(|e| e.to_string());
    let exit_fmt = tracefs.as_ref().ok().and_then(|t| tracefs::read_format(t, "syscalls", "sys_exit_accept4").ok());
    let io_fmt = tracefs.as_ref().ok().and_then(|t| tracefs::read_format(t, "io_uring", "io_uring_complete").ok());
    let resolved = offsets::resolve(&btf, exit_fmt.as_ref(), io_fmt.as_ref());
    let cgroup2 = cgroup2_root_or_mount(&opts.proc_root);
    Ok(Prepared {
        offsets: resolved.offsets,
        resolved,
        tracefs,
        cgroup2_temp: matches!(&cgroup2, Ok(p) if p.to_string_lossy().starts_with(TEMP_CGROUP2_PREFIX)),
        cgroup2,
        backend: opts.backend,
        btf_path: opts.btf_path.clone(),
        aya_btf: std::cell::OnceCell::new(),
    })
}

/// The cgroup v2 mount (at /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified
/// on hybrid ones), from mountinfo.
pub(super) const TEMP_CGROUP2_PREFIX: &str = "/run/netstat-cgroup2-";

/// The cgroup v2 root: the mounted one, else (as root) a private mount of
/// our own, so that a mount namespace without cgroup2 still gets UDP hooks.
pub(super) fn cgroup2_root_or_mount(proc_root: &Path) -> Result<PathBuf, String> {
    let found = cgroup2_root(proc_root);
    if found.is_ok() || unsafe { libc::geteuid() } != 0 {
        return found;
    }
    let dir = PathBuf::from(format!("{TEMP_CGROUP2_PREFIX}{}", std::process::id()));
    let why = found.unwrap_err();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{why}; creating {}: {e}", dir.display()))?;
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let target = c(&dir.to_string_lossy());
    let rc = unsafe { libc::mount(c("none").as_ptr(), target.as_ptr(), c("cgroup2").as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_dir(&dir);
        return Err(format!("{why}; mounting cgroup2 failed: {e}"));
    }
    Ok(dir)
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let (true, Ok(dir)) = (self.cgroup2_temp, &self.cgroup2) {
            let c = std::ffi::CString::new(dir.to_string_lossy().as_bytes()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_dir(dir);
        }
    }
}
/// The cgroup v2 root (`sources::proc::mountinfo`, one rule for both stages).
pub use crate::sources::proc::mountinfo::cgroup2_root;

pub(super) fn unmet(p: &Prepared, needs: &[Need]) -> Option<String> {
    for n in needs {
        match n {
            Need::Tracefs => {
                if let Err(e) = &p.tracefs {
                    return Some(e.clone());
                }
            }
            Need::Cgroup2 => {
                if let Err(e) = &p.cgroup2 {
                    return Some(e.clone());
                }
            }
            Need::Offsets(g) => {
                if let Some(r) = p.resolved.missing(g) {
                    return Some(format!("{g}: {r}"));
                }
            }
        }
    }
    None
}

