//! `--history` and `--at`: read-only queries of the recorder's store.
//! Wires `sources::history` to `render::history` (lifetimes) and to
//! `render::connections` (the table at an instant, with every display
//! option). What the record lacks in the range asked (nobody recording,
//! retention's horizon) is said on stderr, and listed with the lifetimes.
use std::{
    io::{BufWriter, Write},
    process::ExitCode,
};

use crate::{
    EnvError,
    cli::config::Config,
    model::{
        Connection,
        history::{GapKind, Recorded},
    },
    render,
    sources::history::{self, HistoryError, pg, query},
    timefmt::local_millis,
};

fn open(cfg: &Config) -> anyhow::Result<rusqlite::Connection> {
    history::open_read(&cfg.record.db).map_err(usage_or_runtime)
}

fn usage_or_runtime(e: HistoryError) -> anyhow::Error {
    if e.is_usage() { EnvError(e.to_string()).into() } else { anyhow::Error::new(e).context("reading the history") }
}

/// Say on stderr what part of the range the record does not cover.
fn warn_missing(gaps: &[query::Gap]) {
    for g in gaps.iter().filter(|g| g.kind == GapKind::NotRecording) {
        eprintln!(
            "netstat: no record{} from {} to {} (netstat was not recording): the history may be incomplete there",
            g.host.as_deref().map(|h| format!(" of {}", crate::escape::escape(h))).unwrap_or_default(),
            local_millis(g.from_us),
            local_millis(g.to_us)
        );
    }
    let lost: u64 = gaps.iter().map(|g| if let GapKind::Lost { count, .. } = g.kind { count } else { 0 }).sum();
    if lost > 0 {
        eprintln!("netstat: {lost} kernel events were lost in this range: the history may be incomplete there");
    }
}

/// The lifetimes `f` selects and the gaps over its range, from whichever
/// store `--db` names.
fn select(cfg: &Config, f: &query::Filter, at: Option<i64>) -> anyhow::Result<(Vec<Recorded>, Vec<query::Gap>)> {
    let (since, until) = match at {
        Some(t) => (Some(t), Some(t)),
        None => (f.since_us, f.until_us),
    };
    if let Some(target) = &cfg.record.pg {
        let (mut c, _) = pg::open_read(target).map_err(usage_or_runtime)?;
        let rows = match at {
            Some(t) => pg::query::table_at(&mut c, target, t, f),
            None => pg::query::lifetimes(&mut c, target, f),
        }
        .map_err(usage_or_runtime)?;
        let gaps = pg::query::gaps(&mut c, target, f.host.as_deref(), since, until).map_err(usage_or_runtime)?;
        return Ok((rows, gaps));
    }
    let db = open(cfg)?;
    let path = &cfg.record.db;
    let rows = match at {
        Some(t) => query::table_at(&db, path, t, f),
        None => query::lifetimes(&db, path, f),
    }
    .map_err(usage_or_runtime)?;
    let gaps = query::gaps(&db, path, since, until).map_err(usage_or_runtime)?;
    Ok((rows, gaps))
}

pub fn run_history(cfg: &Config) -> anyhow::Result<ExitCode> {
    let (rows, gaps) = select(cfg, &cfg.query, None)?;
    warn_missing(&gaps);
    let mut out = BufWriter::new(std::io::stdout().lock());
    render::history::write(&rows, &gaps, cfg, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_at(cfg: &Config) -> anyhow::Result<ExitCode> {
    let t = cfg.at.expect("--at given");
    let (rows, gaps) = select(cfg, &cfg.query, Some(t))?;
    warn_missing(&gaps);
    // Each connection as netstat listed it then: its state at that instant,
    // the holder it had, no process for a TIME_WAIT.
    let conns: Vec<Connection> = rows
        .iter()
        .map(|r| {
            let mut c = r.conn.clone();
            c.state = r.state_at(t);
            if c.state == Some(netstat_common::tcp_state::TIME_WAIT) {
                c.owner = None;
                c.uid = None;
            } else {
                c.owner = r.holder_at(t).cloned();
            }
            c
        })
        .filter(|c| cfg.pid_matches(c.owner.as_ref().map(|o| o.pid)))
        .collect();
    let mut out = BufWriter::new(std::io::stdout().lock());
    render::connections::write(&conns, cfg, None, None, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
