//! Figure 3: the churn rate with nothing tracing, with netstat, and with two
//! bpftrace scripts (the same output, and an in-kernel count only), alternated.
use std::{fmt::Write as _, process::Stdio};

use anyhow::Result;

use super::Section;
use crate::bench::{
    options::{Bins, Opts},
    sampling::wait_idle,
    stats::{median, spread},
    tracer::{Tracer, TracerKind, tracer_label},
    workload::{EVENTS_PER_CONN, churn},
};

pub fn measure(opts: &Opts, bins: &Bins, section: &mut Section) -> Result<()> {
    let Section { body: s, notes } = section;
    eprintln!("bench: figure 3, churn overhead");
    let variants: [Option<TracerKind>; 4] = [
        None,
        Some(TracerKind::Netstat { ring: None }),
        Some(TracerKind::Bpftrace("tcpstates.bt")),
        Some(TracerKind::Bpftrace("tcpcount.bt")),
    ];
    let runs = opts.runs.min(3);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut lost = vec![0u64; variants.len()];
    let mut events = vec![0u64; variants.len()];
    let mut failure: Vec<Option<String>> = vec![None; variants.len()];
    for round in 0..runs {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            if failure[i].is_some() {
                continue;
            }
            wait_idle();
            let tracer = match variants[i] {
                None => None,
                Some(kind) => match Tracer::start(bins, kind, Stdio::null()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("bench:   {}: {e}", tracer_label(kind));
                        failure[i] = Some(e);
                        continue;
                    }
                },
            };
            let c = churn(bins, opts.churn_seconds, 0, 2)?;
            if let Some(t) = tracer {
                lost[i] += t.finish().0;
            }
            eprintln!("bench:   {:<48} {:.0} conn/s", variants[i].map(tracer_label).unwrap_or("untraced".into()), c.rate);
            rates[i].push(c.rate);
            events[i] += c.connections * EVENTS_PER_CONN;
        }
    }
    let base = median(&rates[0]);
    let _ = writeln!(
        s,
        "Maximum churn (`netstat-load churn --processes 2`, {} s per run, {runs} runs each, alternated) with nothing \
         tracing, with `netstat --stream --json >/dev/null`, with `bpftrace bench/tcpstates.bt >/dev/null` (the same \
         tracepoint, printing the same fields) and with `bpftrace bench/tcpcount.bt` (an in-kernel count only: the \
         cost of the tracepoint itself). Target: netstat at least 0.80x of untraced with zero loss.\n",
        opts.churn_seconds
    );
    let _ = writeln!(s, "| tracer | connections/s, median (min–max) | vs untraced | events lost |\n|---|---|---|---|");
    for (i, v) in variants.iter().enumerate() {
        let label = v.map(tracer_label).unwrap_or("untraced".into());
        if let Some(e) = &failure[i] {
            let _ = writeln!(s, "| `{label}` | not measured: {e} | – | – |");
            notes.push(format!("{label}: not measured ({e})"));
            continue;
        }
        let (lo, hi) = spread(&rates[i]);
        let m = median(&rates[i]);
        let lost_cell = if v.is_none() { "–".to_string() } else { format!("{} of ~{}", lost[i], events[i]) };
        let _ = writeln!(s, "| `{label}` | {m:.0} ({lo:.0}–{hi:.0}) | {:.2}x | {lost_cell} |", m / base);
        if v.is_some() {
            notes.push(format!("{label}: {:.2}x of untraced ({m:.0} vs {base:.0} conn/s), {} lost", m / base, lost[i]));
        }
    }
    Ok(())
}
