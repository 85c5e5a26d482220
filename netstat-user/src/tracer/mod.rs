//! The eBPF side of user space: offsets (BTF, tracefs), the probe plan,
//! loading and attaching, and reading the ring buffer.
use std::process::ExitCode;

use crate::config::Config;

pub fn probe_report(_cfg: &Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
