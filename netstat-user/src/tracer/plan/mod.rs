//! The probe plan: each hook declares what it needs (tracefs, cgroup v2,
//! resolved offsets) and how it attaches; one loop attaches them and records
//! why any was skipped. Only the TCP state hook is essential.
mod attach;
mod hooks;
mod prepare;

pub use attach::attach;
use hooks::*;
pub use prepare::{Prepared, cgroup2_root, prepare};

use crate::escape::escape;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStatus {
    Attached,
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct HookReport {
    pub hook: &'static str,
    pub mechanism: String,
    pub status: HookStatus,
}


/// One warning line per skipped hook, for stderr.
pub fn warnings(report: &[HookReport]) -> Vec<String> {
    report
        .iter()
        .filter_map(|r| match &r.status {
            HookStatus::Skipped(why) => Some(format!("warning: {} not traced: {}", r.hook, escape(why))),
            HookStatus::Attached => None,
        })
        .collect()
}


