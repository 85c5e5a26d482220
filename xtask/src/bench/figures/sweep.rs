//! The held-connections sweep: at 1k, 10k (and 100k) established loopback
//! connections, figure 1 times the listings and figure 4 samples the live
//! table's memory, so each size is set up once for both.
use anyhow::Result;

use super::{memory::Memory, snapshot::Snapshot};
use crate::bench::{
    options::{Bins, Opts},
    report::Report,
    timing::time_once,
    workload::{Held, other_tcp_sockets},
};

pub fn run(opts: &Opts, bins: &Bins, report: &mut Report) -> Result<()> {
    let ns = bins.netstat.to_string_lossy().to_string();
    // Does our display work at all? Checked once, so a missing feature reads
    // as "not measured: why" rather than as a time.
    let ours_an = time_once(&[ns.clone(), "-an".into()]).err();
    let ours_ano = time_once(&[ns.clone(), "-ano".into()]).err();
    for (label, e) in [("netstat -an", &ours_an), ("netstat -ano", &ours_ano)] {
        if let Some(e) = e {
            report.note(1, format!("{label} not measured: {e}"));
        }
    }
    let mut sizes = vec![1_000u64, 10_000];
    if opts.big {
        sizes.push(100_000);
    }
    let last = *sizes.last().unwrap();
    let mut fig1 = opts.wants(1).then(|| Snapshot::new(bins, ours_an.clone(), ours_ano.clone(), last));
    let mut fig4 = opts.wants(4).then(|| Memory::new(ours_ano.clone()));
    if let Some(m) = &mut fig4 {
        eprintln!("bench: figure 4, idle baseline");
        m.baseline(bins);
    }
    for &n in &sizes {
        eprintln!("bench: holding {n} connections");
        // The holder must outlive the step, or the times are of an emptier
        // machine: if it went (killed by someone else), do the step again once.
        let mut attempt = 0;
        let mut held = loop {
            let mut held = Held::start(bins, n)?;
            held.others = other_tcp_sockets(n);
            let Some(fig1) = fig1.as_mut() else { break held };
            eprintln!("bench: figure 1 at {n} (held in {} ms)", held.setup_ms);
            match fig1.time(n, opts.runs, &mut held) {
                Ok(()) => break held,
                Err(why) if attempt == 0 => {
                    eprintln!("bench: {why}; repeating the {n} step");
                    fig1.notes.push(format!("{n}: step repeated: {why}"));
                    attempt += 1;
                }
                Err(why) => {
                    fig1.failed(n, &held, why);
                    break held;
                }
            }
        };
        if let Some(m) = &mut fig4 {
            eprintln!("bench: figure 4 at {n}");
            m.at(bins, n, &mut held);
        }
        drop(held);
    }
    if let Some(f) = fig1 {
        let (body, notes) = f.finish(opts);
        report.section(1).push_str(&body);
        notes.into_iter().for_each(|l| report.note(1, l));
    }
    if let Some(m) = fig4 {
        let (body, notes) = m.finish();
        report.section(4).push_str(&body);
        notes.into_iter().for_each(|l| report.note(4, l));
    }
    Ok(())
}
