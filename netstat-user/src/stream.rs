//! `--stream`: kernel events as text lines or NDJSON.
use std::process::ExitCode;

use crate::config::Config;

pub fn run(_cfg: &Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
