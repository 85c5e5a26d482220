//! `netstat --probe-report [--json]`: start the tracer, say what each hook
//! uses and why the forms before it were passed over, then stop.
use std::process::ExitCode;

use crate::{
    cli::config::Config,
    render::probe,
    tracer::{Tracer, TracerOptions, offset_list},
};

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let opts = TracerOptions::from_config(cfg);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _guard = rt.enter();
    let tracer = Tracer::start(&opts)?;
    let offsets = offset_list(&tracer.offsets);
    let mut out = std::io::stdout().lock();
    if cfg.json {
        probe::write_json(&tracer.report, &opts.btf_path, &offsets, &mut out)?;
    } else {
        probe::write_text(&tracer.report, &opts.btf_path, &offsets, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}
