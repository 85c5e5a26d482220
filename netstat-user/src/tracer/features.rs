//! The kernel features `netstat --version` reports: cheap checks on files
//! any user may read (the BTF blob, sysfs, mountinfo). Nothing is loaded
//! and nothing needs root; what tracing will really use is
//! `--probe-report`'s job, which loads the programs.
use std::path::Path;

/// One feature: found (with what shows it) or not (with why).
pub type Found = Result<String, String>;

#[derive(Debug, Clone)]
pub struct Features {
    /// `uname -srm`.
    pub kernel: String,
    pub btf: Found,
    pub tp_btf: Found,
    pub fentry: Found,
    pub kprobe: Found,
    pub cgroup2: Found,
    pub privileges: Found,
}

fn uname() -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let b: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        crate::escape::escape_bytes(&b)
    };
    format!("{} {} {}", field(&u.sysname), field(&u.release), field(&u.machine))
}

/// Does the BTF string section name `name` (a whole string)?
fn names(btf: &[u8], name: &str) -> bool {
    let needle: Vec<u8> = [&[0u8][..], name.as_bytes(), &[0]].concat();
    btf.windows(needle.len()).any(|w| w == needle)
}

/// Which kernel features this machine has, read from `btf_path`, `sys_root`
/// and `proc_root`.
pub fn detect(btf_path: &Path, sys_root: &Path, proc_root: &Path) -> Features {
    let blob = std::fs::read(btf_path);
    let btf = match &blob {
        Ok(b) => Ok(format!("{} ({} KiB)", btf_path.display(), b.len() / 1024)),
        Err(e) => Err(format!("{}: {e}", btf_path.display())),
    };
    let in_btf = |what: &str, wanted: &[&str]| -> Found {
        let b = blob.as_ref().map_err(|_| "no kernel BTF".to_string())?;
        let missing: Vec<&str> = wanted.iter().copied().filter(|n| !names(b, n)).collect();
        if missing.is_empty() { Ok(format!("{what} in BTF")) } else { Err(format!("BTF lacks {}", missing.join(", "))) }
    };
    let tp_btf = in_btf("btf_trace_inet_sock_set_state", &["btf_trace_inet_sock_set_state"]);
    let trampolines = matches!(std::env::consts::ARCH, "x86_64" | "aarch64" | "riscv64" | "s390x" | "loongarch64");
    let fentry = if trampolines {
        in_btf("tcp_set_state, inet_csk_accept, inet_bind", &["tcp_set_state", "inet_csk_accept", "inet_bind"])
    } else {
        Err(format!("no BPF trampolines on {}", std::env::consts::ARCH))
    };
    let pmu = sys_root.join("bus/event_source/devices/kprobe");
    let kprobe = if pmu.exists() { Ok(pmu.display().to_string()) } else { Err(format!("{} is missing", pmu.display())) };
    let cgroup2 = super::plan::cgroup2_root(proc_root).map(|p| p.display().to_string());
    let privileges = match super::check_privileges() {
        Ok(()) if unsafe { libc::geteuid() } == 0 => Ok("root".into()),
        Ok(()) => Ok("CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN".into()),
        Err(e) => Err(format!("{e}; snapshots only")),
    };
    Features { kernel: uname(), btf, tp_btf, fentry, kprobe, cgroup2, privileges }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_whole_strings() {
        let strings = b"\0tcp_set_state\0inet_bind\0";
        assert!(names(strings, "tcp_set_state") && names(strings, "inet_bind"));
        assert!(!names(strings, "set_state") && !names(strings, "inet"));
    }

    #[test]
    fn a_missing_blob_is_reported_not_fatal() {
        let f = detect(Path::new("/nonexistent/vmlinux"), Path::new("/nonexistent"), Path::new("/nonexistent"));
        assert!(f.btf.unwrap_err().contains("/nonexistent/vmlinux"));
        assert_eq!(f.tp_btf.unwrap_err(), "no kernel BTF");
        assert!(f.kprobe.is_err() && f.cgroup2.is_err());
    }
}
