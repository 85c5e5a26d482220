use std::process::ExitCode;

use netstat_user::{
    EnvError, cli,
    cli::config::Mode,
    is_broken_pipe,
    modes::{display, history, live, probe_report, record, stream, version},
};

fn live_kernel(cfg: &netstat_user::cli::config::Config) -> bool {
    cfg.proc_root == std::path::Path::new("/proc")
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cfg = match cli::config_from_args(&args) {
        Ok(Ok(c)) => c,
        Ok(Err(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("netstat: {e}");
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    let res = match cfg.mode {
        Mode::Stream => stream::run(&cfg),
        Mode::Record => record::run(&cfg),
        Mode::History => history::run_history(&cfg),
        Mode::Connections if cfg.at.is_some() => history::run_at(&cfg),
        Mode::ProbeReport => probe_report::run(&cfg),
        Mode::Version => version::run(&cfg),
        Mode::Generate(a) => {
            let mut out = std::io::stdout().lock();
            cli::generate::write(a, &mut out).and_then(|()| std::io::Write::flush(&mut out)).map(|()| ExitCode::SUCCESS).map_err(Into::into)
        }
        // Fixture trees (--proc-root) describe no live kernel: snapshots only.
        Mode::Connections if cfg.interval.is_some() && cfg.trace && live_kernel(&cfg) => live::run(&cfg),
        Mode::Connections => {
            // A one-shot display is the table's seed snapshot; say when the
            // tracer could not have been used.
            if cfg.trace && live_kernel(&cfg) {
                if let Some(why) = live::tracing_unavailable(&cfg) {
                    eprintln!("netstat: tracing unavailable ({}); showing a snapshot", netstat_user::escape::escape(&why));
                }
            }
            display::run(&cfg)
        }
        Mode::Info { .. } => display::run(&cfg),
    };
    match res {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("netstat: {msg}");
            if e.chain().any(|c| c.is::<EnvError>() || c.is::<cli::UsageError>()) {
                ExitCode::from(cli::EXIT_USAGE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
