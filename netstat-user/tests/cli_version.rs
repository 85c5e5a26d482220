//! `--version`: the git revision baked in at build time and the kernel
//! features found, as root and as an unprivileged user, never failing.
//! vm: host only (needs tools the guest has not)
use std::process::Command;

fn head() -> String {
    let o = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(o.status.success(), "not a git checkout");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn check(out: std::process::Output) -> String {
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = text.lines().next().unwrap();
    assert_eq!(first, format!("netstat {} (git {}), eBPF", env!("CARGO_PKG_VERSION"), head()));
    for feature in ["kernel: Linux ", "  BTF ", "  tp_btf ", "  fentry/fexit ", "  kprobe ", "  cgroup v2 ", "  tracing privileges "] {
        assert!(text.contains(feature), "no {feature:?} in:\n{text}");
    }
    text
}

#[test]
fn version_names_the_revision_and_the_kernel_features() {
    let text = check(Command::new(env!("CARGO_BIN_EXE_netstat")).arg("--version").output().unwrap());
    if unsafe { libc::geteuid() } == 0 {
        assert!(text.contains("tracing privileges  yes: root"), "{text}");
    }
    assert_eq!(check(Command::new(env!("CARGO_BIN_EXE_netstat")).arg("-V").output().unwrap()), text);
}

#[test]
fn version_without_root_or_btf_still_answers() {
    let bin = env!("CARGO_BIN_EXE_netstat");
    let o = Command::new(bin).arg("--version").env("NETSTAT_BTF_PATH", "/nonexistent/vmlinux").output().unwrap();
    let text = check(o);
    assert!(text.contains("  BTF                 no: /nonexistent/vmlinux"), "{text}");
    assert!(text.contains("  tp_btf              no: no kernel BTF"), "{text}");
    if unsafe { libc::geteuid() } == 0 {
        let o = Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", bin, "--version"]).output().unwrap();
        let text = check(o);
        assert!(text.contains("  tracing privileges  no: "), "{text}");
        assert!(text.contains("  BTF                 yes: ") || text.contains("  BTF                 no: "), "{text}");
    }
}
