//! `ss -tuanpe` as a witness: every TCP and UDP socket with its cookie
//! (`sk:HEX`) and the processes whose fd tables hold it.
#![allow(dead_code)]
use std::{collections::BTreeSet, process::Command};

/// One socket line of `ss -tuanpe`.
#[derive(Debug)]
pub struct SsSock {
    pub proto: String,
    pub state: String,
    pub local: String,
    pub peer: String,
    pub cookie: Option<u64>,
    /// (comm, pid) of every process with the socket in its fd table.
    pub users: Vec<(String, u64)>,
}

pub fn sockets() -> Vec<SsSock> {
    let out = Command::new("ss").args(["-tuanpe"]).output().expect("run ss");
    assert!(out.status.success(), "ss -tuanpe: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().skip(1).filter_map(parse_line).collect()
}

pub fn parse_line(line: &str) -> Option<SsSock> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 6 {
        return None;
    }
    let cookie = f.iter().find_map(|t| t.strip_prefix("sk:")).and_then(|h| u64::from_str_radix(h, 16).ok());
    let mut users = Vec::new();
    if let Some(u) = f.iter().find_map(|t| t.strip_prefix("users:(")) {
        // (("comm",pid=N,fd=M),("comm",pid=N,fd=M))
        for entry in u.split("),(") {
            let entry = entry.trim_matches(|c| c == '(' || c == ')');
            let comm = entry.split('"').nth(1).unwrap_or_default().to_string();
            let pid = entry.split(',').find_map(|p| p.strip_prefix("pid=")).and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                users.push((comm, pid));
            }
        }
    }
    Some(SsSock { proto: f[0].into(), state: f[1].into(), local: f[4].into(), peer: f[5].into(), cookie, users })
}

impl SsSock {
    pub fn pids(&self) -> BTreeSet<u64> {
        self.users.iter().map(|u| u.1).collect()
    }
}

