//! Snapshot displays: connections (-a -n -o -b -f -t -p), routes (-r),
//! statistics (-s), interfaces (-e), once or every INTERVAL.
use std::process::ExitCode;

use crate::config::Config;

pub fn run(_cfg: &Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
