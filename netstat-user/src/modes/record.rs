//! `--record`: the recorder. Kernel events build connection lifetimes
//! (`table::lifetimes`); every half second what is due goes to the store
//! (`sources::history::writer`) on a thread of its own, in one
//! transaction, so the ring is never drained behind a disk write. Starts
//! from the table as it stands (sock_diag, with owners), continues what a
//! killed run left open, and records lost events and its own run.
use std::{process::ExitCode, sync::mpsc, time::Duration};

use anyhow::Context as _;

use super::signals::Stop;
use crate::{
    EnvError,
    cli::config::Config,
    model::SockEvent,
    sources::{
        history::{
            self, HistoryError,
            pg::forward::Forwarder,
            writer::{Batch, LostEvents, Retention, Writer},
        },
        owners::ProcFdScan,
        snapshot,
    },
    table::lifetimes::Lifetimes,
    timefmt::{monotonic_ns, realtime_offset_ns},
    tracer::{Record, Tracer, TracerOptions, plan},
};

/// How often a batch is written (a crash loses at most this much).
const BATCH_EVERY: Duration = Duration::from_millis(500);

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(record(cfg))
}

fn store_error(e: HistoryError) -> anyhow::Error {
    if e.is_usage() { EnvError(e.to_string()).into() } else { anyhow::Error::new(e).context("writing the history") }
}

enum ToWriter {
    Batch(Batch),
    Stop,
}

async fn record(cfg: &Config) -> anyhow::Result<ExitCode> {
    let r = &cfg.record;
    let retention = Retention { retain_us: r.retain_us, max_bytes: r.max_db_bytes };
    let boot = history::boot_id(&cfg.proc_root);
    let (writer, resume) = Writer::start(&r.db, retention, boot.as_deref(), r.pg.is_some()).map_err(store_error)?;
    // The fleet store: a thread of its own forwards what the writer has
    // committed; while PostgreSQL is away it waits, and the rows wait in
    // the local store.
    let forwarder = match &r.pg {
        Some(target) => {
            let f = Forwarder { target: target.clone(), host: r.host_name.clone(), local: r.db.clone(), retain_us: r.retain_us };
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            let handle = std::thread::Builder::new()
                .name("netstat-forward".into())
                .spawn(move || {
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                    f.run(stop_rx)
                })
                .context("starting the PostgreSQL forwarder")?;
            Some((stop_tx, handle, target.shown.clone()))
        }
        None => None,
    };
    let opts = TracerOptions::from_config(cfg).with_listeners();
    let mut tracer = Tracer::start(&opts)?;
    for w in plan::warnings(&tracer.report) {
        eprintln!("netstat: {w}");
    }
    // Dated with the offset sampled now; resampled each batch, so a step of
    // the wall clock dates the events after it by the new clock.
    let mut clock = realtime_offset_ns();
    let netns = crate::sources::netns::scope(cfg);
    let mut lifetimes = Lifetimes::new(resume.next_id, clock, &cfg.proc_root, &cfg.runtime_root);

    // The writer thread: one transaction per batch; its error ends the run.
    let (tx, rx) = mpsc::channel::<ToWriter>();
    let (err_tx, err_rx) = mpsc::channel::<HistoryError>();
    let thread = std::thread::Builder::new()
        .name("netstat-record".into())
        .spawn(move || {
            // The ring's reader comes first: under a flood the batches wait
            // in memory, never the kernel's events.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
            let mut writer = writer;
            for msg in rx {
                match msg {
                    ToWriter::Batch(b) => {
                        if let Err(e) = writer.write(&b) {
                            let _ = err_tx.send(e);
                            return;
                        }
                    }
                    ToWriter::Stop => break,
                }
            }
            if let Err(e) = writer.stop() {
                let _ = err_tx.send(e);
            }
        })
        .context("starting the history writer")?;

    // The table recording starts from, after the tracer: a socket opened in
    // between is in both, and the events win.
    let mut seed = if cfg.all_namespaces {
        snapshot::all_namespaces(cfg).context("reading sockets")?.0
    } else {
        let mut s = snapshot::with_cookies(cfg).context("reading sockets")?;
        let ns = crate::sources::netns_inode(&cfg.proc_root);
        for c in &mut s {
            c.id.netns = ns;
        }
        s
    };
    ProcFdScan { proc_root: cfg.proc_root.clone() }.fill_with(&mut seed, true, None);
    let gone = lifetimes.seed(seed, resume.open, resume.stale, resume.previous_end_us, monotonic_ns());
    let mut pending = Batch { rows: gone, lost: Vec::new() };
    eprintln!(
        "netstat: recording into {} (retain {}s{}); Ctrl+C stops",
        crate::escape::escape(&r.db.display().to_string()),
        r.retain_us / 1_000_000,
        r.max_db_bytes.map(|b| format!(", at most {b} bytes")).unwrap_or_default()
    );

    let mut stop_signal = Stop::install()?;
    let deadline = (cfg.duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(cfg.duration));
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(4096);
    let (mut events, mut lost, mut rows) = (0u64, 0u64, 0u64);
    let mut stop = false;
    let mut more = false;
    while !stop || more {
        let mut due = false;
        if more {
            more = tracer.finish(&mut batch);
        } else {
            tokio::select! {
                _ = stop_signal.recv() => stop = true,
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => stop = true,
                _ = tick.tick() => due = true,
                r = tracer.next_batch(&mut batch) => r?,
            }
            if stop {
                more = tracer.finish(&mut batch);
            }
        }
        for rec in batch.drain(..) {
            match rec {
                Record::Event(ev) => {
                    let e = SockEvent::decode(&ev);
                    if e.id.within(netns) {
                        events += 1;
                        lifetimes.apply(&e);
                    }
                }
                Record::Lost { reason, count, noticed_ns } => {
                    lost += count;
                    let at_us = ((noticed_ns as i128 + clock) / 1000) as i64;
                    pending.lost.push(LostEvents { at_us, reason: reason.to_string(), count });
                }
                Record::Bad(e) => eprintln!("netstat: undecodable kernel record: {}", crate::escape::escape(&e.to_string())),
            }
        }
        if due {
            clock = realtime_offset_ns();
            lifetimes.set_clock(clock);
            lifetimes.flush(monotonic_ns(), false, &mut pending.rows);
            rows += pending.rows.len() as u64;
            send(&tx, &mut pending, &err_rx)?;
        }
    }
    drop(tracer);
    // Everything, open rows too: the next run continues them.
    lifetimes.flush(monotonic_ns(), true, &mut pending.rows);
    rows += pending.rows.len() as u64;
    if lifetimes.no_cookie > 0 {
        pending.lost.push(LostEvents { at_us: history::now_us(), reason: "no_cookie".into(), count: lifetimes.no_cookie });
    }
    send(&tx, &mut pending, &err_rx)?;
    let _ = tx.send(ToWriter::Stop);
    let _ = thread.join();
    // After the writer's last batch: the forwarder sends what is left.
    let forwarded = forwarder.map(|(stop, handle, shown)| {
        let _ = stop.send(());
        (handle.join().unwrap_or_default(), shown)
    });
    if let Ok(e) = err_rx.try_recv() {
        return Err(store_error(e));
    }
    if let Some((f, shown)) = forwarded {
        eprintln!(
            "netstat: forwarded {} rows to {shown}{}",
            f.rows,
            if f.waiting > 0 { format!("; {} rows wait in the local store for the next run", f.waiting) } else { String::new() }
        );
    }
    eprintln!("netstat: recorded {events} events into {rows} rows; {lost} events lost");
    Ok(ExitCode::SUCCESS)
}

fn send(tx: &mpsc::Sender<ToWriter>, pending: &mut Batch, err: &mpsc::Receiver<HistoryError>) -> anyhow::Result<()> {
    if let Ok(e) = err.try_recv() {
        return Err(store_error(e));
    }
    // An empty batch still carries the heartbeat.
    let b = std::mem::take(pending);
    if tx.send(ToWriter::Batch(b)).is_err() {
        return Err(match err.try_recv() {
            Ok(e) => store_error(e),
            Err(_) => anyhow::anyhow!("the history writer stopped"),
        });
    }
    Ok(())
}
