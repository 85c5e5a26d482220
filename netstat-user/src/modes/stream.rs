//! `--stream`: kernel events as text lines or NDJSON, one per event, as they
//! happen. Wires the tracer to the printers (`render::stream`,
//! `render::json`); the tracer owns the kernel side.
use std::{
    io::{BufWriter, Write},
    process::ExitCode,
    time::Duration,
};

use super::signals::Stop;
use crate::{
    cli::config::Config,
    escape::escape,
    model::SockEvent,
    sources::cgroup::Cgroups,
    render::{json, stream as text},
    tracer::{Record, Tracer, TracerOptions, plan},
};

/// Exit status of `--stream --fail-on-loss` when events were lost.
pub const EXIT_LOST: u8 = 3;

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(stream(cfg))
}

/// Where the lines go, and the state the JSON encoder keeps between them.
struct Out<W: Write> {
    w: W,
    json: bool,
    buf: Vec<u8>,
    clock: json::Clock,
    clock_offset_ns: i128,
    /// --pid: only that process's events (lost lines are everyone's).
    pid: Option<u32>,
    /// Our network namespace's inode: other namespaces' events are left
    /// out (0: --all-namespaces, or not known).
    netns: u32,
    cgroups: Cgroups,
    proc_root: std::path::PathBuf,
}

impl<W: Write> Out<W> {
    /// Write one record; false for an event `--pid` leaves out.
    fn record(&mut self, rec: &Record) -> std::io::Result<bool> {
        self.buf.clear();
        match rec {
            Record::Event(e) => {
                let mut e = SockEvent::decode(e);
                if !self.pid_matches(e.owner.as_ref().map(|o| o.pid)) {
                    return Ok(false);
                }
                if !e.id.within(self.netns) {
                    return Ok(false);
                }
                // Only JSON prints the cgroup: the text stream never looks it up.
                if self.json
                    && let Some(o) = &mut e.owner
                    && let Some(id) = o.cgroup_id
                {
                    o.cgroup = Some(self.cgroups.resolve(&self.proc_root, id, o.pid));
                }
                if self.json {
                    json::event(&mut self.buf, &e, self.clock_offset_ns, &mut self.clock);
                } else {
                    text::write_event(&mut self.buf, &e, self.clock_offset_ns);
                }
            }
            // Stamped when the counters said so, not when written: every
            // event it counts was lost before that time.
            Record::Lost { reason, count, noticed_ns } if self.json => {
                json::lost(&mut self.buf, *noticed_ns as i128 + self.clock_offset_ns, reason, *count)
            }
            Record::Lost { reason, count, noticed_ns } => {
                let at = *noticed_ns as i128 + self.clock_offset_ns;
                text::write_lost(&mut self.buf, at, reason, *count);
            }
            Record::Bad(e) => eprintln!("netstat: undecodable kernel record: {}", escape(&e.to_string())),
        }
        self.w.write_all(&self.buf)?;
        Ok(true)
    }

    fn pid_matches(&self, owner_pid: Option<u32>) -> bool {
        self.pid.is_none_or(|p| owner_pid == Some(p))
    }
}

async fn stream(cfg: &Config) -> anyhow::Result<ExitCode> {
    let opts = TracerOptions::from_config(cfg).with_listeners();
    let mut tracer = Tracer::start(&opts)?;
    for w in plan::warnings(&tracer.report) {
        eprintln!("netstat: {w}");
    }
    let mut stop_signal = Stop::install()?;
    let deadline = (cfg.duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(cfg.duration));
    // For the hardening tests: a panic with everything attached must leave nothing behind.
    let panic_at = std::env::var("NETSTAT_TEST_PANIC_AFTER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut out = Out {
        w: BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
        json: cfg.json,
        buf: Vec::with_capacity(512),
        clock: json::Clock::default(),
        clock_offset_ns: tracer.clock_offset_ns,
        pid: cfg.pid,
        netns: crate::sources::netns::scope(cfg),
        cgroups: Cgroups::new(&cfg.proc_root, &cfg.runtime_root),
        proc_root: cfg.proc_root.clone(),
    };
    if !cfg.json {
        writeln!(out.w, "{}", text::TEXT_HEADER)?;
        out.w.flush()?;
    }
    let mut batch = Vec::with_capacity(4096);
    let mut events: u64 = 0;
    let mut lost: u64 = 0;
    let mut stop = false;
    // Whether the ring still held a full batch at the last `finish`.
    let mut more = false;
    while !stop || more {
        if more {
            more = tracer.finish(&mut batch);
        } else {
            tokio::select! {
                _ = stop_signal.recv() => stop = true,
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => stop = true,
                _ = async { tokio::time::sleep_until(panic_at.unwrap()).await }, if panic_at.is_some() => {
                    panic!("NETSTAT_TEST_PANIC_AFTER_MS: panicking with every program attached")
                }
                r = tracer.next_batch(&mut batch) => r?,
            }
            if stop {
                // What is already in the ring was seen by the kernel: print it
                // (a batch at a time, until `finish` says the ring is empty).
                more = tracer.finish(&mut batch);
            }
        }
        for rec in batch.drain(..) {
            let shown = out.record(&rec)?;
            match &rec {
                Record::Event(_) if shown => events += 1,
                Record::Lost { count, .. } => lost += count,
                _ => {}
            }
            if cfg.count > 0 && events >= cfg.count {
                stop = true;
                more = false;
                break;
            }
        }
        out.w.flush()?;
    }
    drop(tracer);
    if lost > 0 {
        eprintln!("netstat: {lost} kernel events lost (ring buffer {} bytes; raise --ring-size)", cfg.ring_size);
        if cfg.fail_on_loss {
            return Ok(ExitCode::from(EXIT_LOST));
        }
    }
    Ok(ExitCode::SUCCESS)
}
