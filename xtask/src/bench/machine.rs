//! What the results were measured on (CPU, memory, limits, tool versions),
//! for the Machine section of bench/RESULTS.md. Reads only.
use std::{fs, process::Command, thread};

pub fn describe() -> Vec<(String, String)> {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown".into());
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let virt = if cpuinfo.contains(" hypervisor") { ", virtual machine" } else { "" };
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string()))
        .unwrap_or_default();
    let first_line = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .ok()
            .map(|o| {
                let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                String::from_utf8_lossy(&s).lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_else(|| "missing".into())
    };
    let git = first_line(&["git", "-C", crate::root().to_str().unwrap_or("."), "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", crate::root().to_str().unwrap_or("."), "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let sysctl = |k: &str| read(&format!("/proc/sys/{}", k.replace('.', "/"))).split_whitespace().collect::<Vec<_>>().join("-");
    vec![
        ("date".into(), first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])),
        ("kernel".into(), read("/proc/sys/kernel/osrelease").trim().to_string()),
        ("cpu".into(), format!("{cpus} × {model}{virt}")),
        ("memory".into(), mem),
        ("open files per process".into(), first_line(&["sh", "-c", "ulimit -Hn"])),
        (
            "ports".into(),
            format!(
                "ephemeral {}, tcp_tw_reuse {}, somaxconn {}",
                sysctl("net.ipv4.ip_local_port_range"),
                sysctl("net.ipv4.tcp_tw_reuse"),
                sysctl("net.core.somaxconn")
            ),
        ),
        ("netstat".into(), format!("git {git}{}", if dirty { " (with uncommitted changes)" } else { "" })),
        ("ss".into(), first_line(&["ss", "-V"])),
        ("net-tools".into(), first_line(&["netstat", "-V"])),
        ("bpftrace".into(), first_line(&["bpftrace", "--version"])),
    ]
}
