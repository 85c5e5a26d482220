//! Figure 2: events lost by `netstat --stream --json` under maximum churn
//! with the default ring, then a sweep of ring sizes to where losses start
//! (or stop).
use std::{fmt::Write as _, process::Stdio};

use anyhow::Result;

use super::Section;
use crate::bench::{
    options::{Bins, Opts},
    sampling::wait_idle,
    stats::{capitalise, kib},
    tracer::{Tracer, TracerKind, default_ring},
    workload::{Churn, EVENTS_PER_CONN, churn},
};

pub fn measure(_opts: &Opts, bins: &Bins, section: &mut Section) -> Result<()> {
    let Section { body: s, notes } = section;
    eprintln!("bench: figure 2, loss under maximum churn");
    let default = default_ring(bins);
    let run = |ring: Option<u64>, seconds: u64| -> Result<(Churn, u64), String> {
        wait_idle();
        let t = Tracer::start(bins, TracerKind::Netstat { ring }, Stdio::null())?;
        let c = churn(bins, seconds, 0, 2).map_err(|e| format!("{e:#}"))?;
        let (lost, _) = t.finish();
        eprintln!("bench:   ring {:?}: {} connections, {lost} lost", ring.or(default), c.connections);
        Ok((c, lost))
    };
    let main = run(None, 10);
    match &main {
        Err(e) => {
            let _ = writeln!(s, "Not measured: `netstat --stream --json` {e}.");
            notes.push(format!("not measured: {e}"));
            return Ok(());
        }
        Ok((c, lost)) => {
            let events = c.connections * EVENTS_PER_CONN;
            let _ = writeln!(
                s,
                "Maximum churn (`netstat-load churn --processes 2`) for 10 s with the default ring ({}): {} connections \
                 ({:.0}/s, {} failed connects, about {} events), **{lost} events lost** ({:.3}%). Target: zero.\n",
                default.map(kib).unwrap_or_else(|| "default".into()),
                c.connections,
                c.rate,
                c.errors,
                events,
                100.0 * *lost as f64 / events.max(1) as f64
            );
            notes.push(
                format!("{lost} lost of ~{events} events at {:.0} conn/s, default ring ({})", c.rate, if *lost == 0 { "target met" } else { "target MISSED" }),
            );
        }
    }
    // Where do losses start? Halve the ring (5 s runs) until they do, or,
    // if the default already loses, grow it until they stop.
    let Some(default) = default else {
        let _ = writeln!(s, "Ring sweep not run: the default ring size could not be read from `netstat --help`.");
        return Ok(());
    };
    let lost_default = main.as_ref().map(|(_, l)| *l).unwrap_or(0);
    let _ = writeln!(s, "| ring size | connections (5 s) | events lost |\n|---|---|---|");
    let mut first_loss = None;
    let mut ring = default;
    let mut tried = Vec::new();
    for _ in 0..5 {
        ring = if lost_default == 0 { ring / 4 } else { ring * 4 };
        // A page at least; past 1 GiB a bigger ring only hides a slow reader.
        if !(4096..=1 << 30).contains(&ring) {
            break;
        }
        tried.push(ring);
        match run(Some(ring), 5) {
            Ok((c, lost)) => {
                let _ = writeln!(s, "| {} | {} | {lost} |", kib(ring), c.connections);
                if (lost > 0) == (lost_default == 0) {
                    first_loss = Some(ring);
                    break;
                }
            }
            Err(e) => {
                let _ = writeln!(s, "| {} | not measured: {e} | |", kib(ring));
                break;
            }
        }
    }
    let line = match (first_loss, lost_default) {
        (Some(r), 0) => format!("losses start at a {} ring", kib(r)),
        (Some(r), _) => format!("losses stop at a {} ring", kib(r)),
        (None, 0) => format!("no losses down to a {} ring", kib(tried.last().copied().unwrap_or(default))),
        (None, _) => format!(
            "losses at every ring size tried, up to {}: the reader, not the ring, is the limit",
            kib(tried.last().copied().unwrap_or(default))
        ),
    };
    let _ = writeln!(s, "\n{}.", capitalise(&line));
    notes.push(line);
    Ok(())
}
