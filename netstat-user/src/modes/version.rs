//! `--version`: what this build is and what the kernel offers, without
//! root and without loading anything.
use std::{io::Write, process::ExitCode};

use crate::{
    cli::config::Config,
    render,
    tracer::{TracerOptions, features},
};

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let opts = TracerOptions::from_config(cfg);
    let f = features::detect(&opts.btf_path, &cfg.sys_root, &cfg.proc_root);
    let mut out = std::io::stdout().lock();
    render::version::write(&f, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
