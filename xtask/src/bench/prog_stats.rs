//! What a process's BPF programs have cost the kernel: `run_cnt` and
//! `run_time_ns` from the fdinfo of its program fds (kept only while
//! `kernel.bpf_stats_enabled` is 1), with names from bpftool. Reads only,
//! apart from switching the stats on and back.
use std::{collections::BTreeMap, fs, process::Command};

use anyhow::{Context as _, Result};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while alive; the old value comes back on drop
/// (also when a measurement fails part-way).
pub struct StatsEnabled {
    old: String,
}

impl StatsEnabled {
    pub fn on() -> Result<StatsEnabled> {
        let old = fs::read_to_string(STATS_SYSCTL).context("reading kernel.bpf_stats_enabled")?.trim().to_string();
        fs::write(STATS_SYSCTL, "1").context("setting kernel.bpf_stats_enabled=1")?;
        Ok(StatsEnabled { old })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = fs::write(STATS_SYSCTL, &self.old);
    }
}

/// One program's counters at one moment.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Runs {
    pub count: u64,
    pub ns: u64,
}

impl std::ops::Sub for Runs {
    type Output = Runs;
    fn sub(self, before: Runs) -> Runs {
        Runs { count: self.count.saturating_sub(before.count), ns: self.ns.saturating_sub(before.ns) }
    }
}

/// Program id -> counters, for every BPF program `pid` holds an fd of (a
/// program held through several fds counts once).
pub fn programs_of(pid: u32) -> Result<BTreeMap<u32, Runs>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?.filter_map(Result::ok) {
        let is_prog = fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf-prog"));
        if !is_prog {
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).unwrap_or_default();
        if let Some((id, runs)) = parse_fdinfo(&info) {
            out.insert(id, runs);
        }
    }
    Ok(out)
}

fn parse_fdinfo(info: &str) -> Option<(u32, Runs)> {
    let field = |k: &str| {
        info.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')).and_then(|v| v.trim().parse::<u64>().ok()))
    };
    Some((field("prog_id")? as u32, Runs { count: field("run_cnt")?, ns: field("run_time_ns")? }))
}

/// Program id -> full name (bpftool reads it from the program's BTF, where
/// the kernel's own name stops at 15 characters).
pub fn names() -> Result<BTreeMap<u32, String>> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().context("running bpftool prog show")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool printed no JSON")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()? as u32, p["name"].as_str()?.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_counters_are_read() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t26\nprog_jited:\t1\n\
                    prog_tag:\tab12cd34ef56ab78\nmemlock:\t4096\nprog_id:\t1280\nrun_time_ns:\t523400\nrun_cnt:\t9100\n\
                    recursion_misses:\t0\nverified_insns:\t321\n";
        assert_eq!(parse_fdinfo(info), Some((1280, Runs { count: 9100, ns: 523400 })));
        assert_eq!(parse_fdinfo("pos:\t0\n"), None);
        assert_eq!(Runs { count: 5, ns: 9 } - Runs { count: 2, ns: 10 }, Runs { count: 3, ns: 0 });
    }
}
