//! Interval mode with the tracer (`netstat -ano 2`): the live table is
//! seeded from a snapshot, kept current by kernel events between displays,
//! and reconciled with a fresh snapshot at every display. Each display shows
//! the table, then every connection that opened and/or closed since the last
//! one, with the owner the kernel captured (right even when the process has
//! exited). Owns the loop and the "closed" section; the connection list
//! layout is `output::connections`.
use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use netstat_common::Event;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    escape::escape_bytes,
    model::{Connection, ProcOwner, Proto, tcp_state_name},
    output::connections,
    owners::{OwnerLookup, ProcFdScan},
    resolve::Resolver,
    stream::format_duration,
    table::{self, ClosedRow, Row, SnapshotRow, Table},
    timefmt::{monotonic_ns, rfc3339_nanos},
    tracer::{Record, Tracer, TracerOptions, plan, realtime_offset_ns},
};

/// Inode of our network namespace: events from other namespaces are not ours.
pub fn netns_inode(proc_root: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(proc_root.join("self/ns/net")).map(|m| m.ino() as u32).unwrap_or(0)
}

/// Executables of the processes seen, read while they are alive (for -b).
#[derive(Default)]
struct ExeCache {
    proc_root: PathBuf,
    by_pid: HashMap<u32, Option<PathBuf>>,
}

impl ExeCache {
    const MAX: usize = 65_536;

    fn note(&mut self, pid: u32) {
        if pid == 0 || self.by_pid.contains_key(&pid) {
            return;
        }
        if self.by_pid.len() >= Self::MAX {
            self.by_pid.clear();
        }
        let exe = std::fs::read_link(self.proc_root.join(pid.to_string()).join("exe")).ok();
        self.by_pid.insert(pid, exe);
    }

    fn get(&self, pid: u32) -> Option<PathBuf> {
        self.by_pid.get(&pid).cloned().flatten()
    }
}

fn owner_of(o: &table::RowOwner, exes: &ExeCache) -> ProcOwner {
    ProcOwner { pid: o.pid, comm: o.comm.clone(), exe: exes.get(o.pid) }
}

fn connection_of(r: &Row, exes: &ExeCache) -> Connection {
    Connection {
        proto: r.key.proto,
        ipv6: r.key.local.is_ipv6(),
        local: r.key.local,
        remote: r.key.remote,
        state: r.state,
        inode: r.inode,
        uid: r.uid,
        offloaded: r.offloaded,
        owner: r.owner.as_ref().map(|o| owner_of(o, exes)),
    }
}

#[derive(Serialize)]
struct ClosedJson {
    proto: Proto,
    local: String,
    remote: String,
    final_state: Option<&'static str>,
    pid: Option<u32>,
    process: Option<String>,
    executable: Option<String>,
    owner_source: Option<&'static str>,
    lived_ns: Option<u64>,
    closed: String,
}

#[derive(Serialize)]
struct DisplayJson {
    time: String,
    connections: serde_json::Value,
    closed_since_last_display: Vec<ClosedJson>,
    lost_events: u64,
    lost_since: Option<String>,
    lost_by_reason: std::collections::BTreeMap<&'static str, u64>,
    dropped_rows: u64,
    row_cap: usize,
}

struct Live<'a> {
    cfg: &'a Config,
    table: Table,
    exes: ExeCache,
    names: Option<Resolver>,
    clock: i128,
}

impl Live<'_> {
    fn apply(&mut self, rec: &Record) {
        match rec {
            Record::Event(e) => self.apply_event(e),
            Record::Lost { count, reason } => {
                let clock = self.clock;
                self.table.note_lost(reason, *count, || rfc3339_nanos(monotonic_ns() as i128 + clock));
            }
            Record::Bad(_) => {}
        }
    }

    fn apply_event(&mut self, e: &Event) {
        if self.cfg.executable {
            self.exes.note(e.tgid);
        }
        self.table.apply(e);
    }

    fn closed_rows<'c>(&self, closed: &'c [ClosedRow]) -> Vec<&'c ClosedRow> {
        let mut rows: Vec<&ClosedRow> = closed
            .iter()
            .filter(|c| {
                let proto = c.key.proto;
                let proto_ok = match proto {
                    Proto::Tcp => self.cfg.proto.tcp,
                    Proto::Udp => self.cfg.proto.udp,
                };
                let fam_ok = if c.key.local.is_ipv6() { self.cfg.family.v6() } else { self.cfg.family.v4() };
                proto_ok && fam_ok && (self.cfg.all || proto == Proto::Tcp)
            })
            .collect();
        rows.sort_by_key(|c| c.closed_ns);
        rows
    }

    fn render(&mut self, w: &mut impl Write) -> std::io::Result<()> {
        let conns: Vec<Connection> = self.table.live().map(|r| connection_of(r, &self.exes)).collect();
        let closed = self.table.take_closed();
        let closed = self.closed_rows(&closed);
        let now = rfc3339_nanos(monotonic_ns() as i128 + self.clock);
        if self.cfg.json {
            let rows = connections::select(&conns, self.cfg);
            let d = DisplayJson {
                time: now,
                connections: connections::json_value(&rows, self.cfg, self.names.as_ref())["connections"].take(),
                closed_since_last_display: closed.iter().map(|c| self.closed_json(c)).collect(),
                lost_events: self.table.lost_events,
                lost_since: self.table.lost_since.clone(),
                lost_by_reason: self.table.lost_by_reason.clone(),
                dropped_rows: self.table.dropped,
                row_cap: self.cfg.max_rows,
            };
            serde_json::to_writer(&mut *w, &d)?;
            writeln!(w)?;
            return w.flush();
        }
        connections::write(&conns, self.cfg, self.names.as_ref(), w)?;
        self.write_closed(&closed, w)?;
        if self.table.lost_events > 0 {
            writeln!(
                w,
                "\ntable may be incomplete: {} events lost since {} ({})",
                self.table.lost_events,
                self.table.lost_since.as_deref().unwrap_or("start"),
                self.table.lost_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
            )?;
        }
        if self.table.dropped > 0 {
            writeln!(w, "{} rows dropped (row cap {}; raise --max-rows)", self.table.dropped, self.cfg.max_rows)?;
        }
        w.flush()
    }

    fn closed_json(&self, c: &ClosedRow) -> ClosedJson {
        let proto = c.key.proto;
        ClosedJson {
            proto,
            local: c.key.local.to_string(),
            remote: c.key.remote.to_string(),
            final_state: c.final_state.map(tcp_state_name),
            pid: c.owner.as_ref().map(|o| o.pid),
            process: c.owner.as_ref().map(|o| escape_bytes(&o.comm)),
            executable: c
                .owner
                .as_ref()
                .and_then(|o| self.exes.get(o.pid))
                .map(|p| escape_bytes(p.as_os_str().as_encoded_bytes())),
            owner_source: c.owner.as_ref().map(|o| match o.source {
                table::OwnerSource::Kernel => "kernel",
                table::OwnerSource::Proc => "proc",
            }),
            lived_ns: c.lived_ns,
            closed: rfc3339_nanos(c.closed_ns as i128 + self.clock),
        }
    }

    fn write_closed(&self, closed: &[&ClosedRow], w: &mut impl Write) -> std::io::Result<()> {
        writeln!(w, "\nClosed since last display\n")?;
        writeln!(
            w,
            "  {:<7}{:<23}{:<23}{:<16}{:<9}Lived",
            "Proto", "Local Address", "Foreign Address", "Final State", "PID"
        )?;
        let names = self.names.as_ref();
        for c in closed {
            let proto = c.key.proto;
            let local = connections::endpoint(c.key.local, proto, names, false, self.cfg.fqdn);
            let remote = if proto == Proto::Udp && c.key.remote.port() == 0 {
                "*:*".to_string()
            } else {
                connections::endpoint(c.key.remote, proto, names, true, self.cfg.fqdn)
            };
            let state = c.final_state.map(tcp_state_name).unwrap_or("");
            let pid = c.owner.as_ref().map(|o| o.pid.to_string()).unwrap_or_else(|| "-".into());
            let lived = c.lived_ns.map(format_duration).unwrap_or_else(|| "-".into());
            writeln!(w, "  {:<7}{:<23}{:<23}{:<16}{:<9}{}", proto.name(), local, remote, state, pid, lived)?;
            if self.cfg.executable {
                match &c.owner {
                    Some(o) => {
                        let name = match self.exes.get(o.pid) {
                            Some(p) if self.cfg.verbose => escape_bytes(p.as_os_str().as_encoded_bytes()),
                            Some(p) => p.file_name().map(|f| escape_bytes(f.as_encoded_bytes())).unwrap_or_default(),
                            None => escape_bytes(&o.comm),
                        };
                        writeln!(w, " [{name}]")?;
                    }
                    None => writeln!(w, " Can not obtain ownership information")?,
                }
            }
        }
        Ok(())
    }
}

/// Why tracing is not available, if it is not (cheap checks, no loading).
pub fn tracing_unavailable(cfg: &Config) -> Option<String> {
    if let Err(e) = crate::tracer::check_privileges() {
        return Some(e.0);
    }
    let opts = TracerOptions::from_config(cfg);
    if !opts.btf_path.exists() {
        return Some(format!("no kernel BTF at {}", opts.btf_path.display()));
    }
    None
}

/// Interval mode with tracing. Falls back to snapshots (`display::run`) with
/// one line on stderr when the tracer cannot start.
pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let tracer = {
        let _g = rt.enter();
        Tracer::start(&TracerOptions::from_config(cfg))
    };
    let mut tracer = match tracer {
        Ok(t) => t,
        Err(e) => {
            eprintln!("netstat: tracing unavailable ({}); showing snapshots", crate::tracer::one_line(&format!("{e:#}")));
            return crate::display::run(cfg);
        }
    };
    for w in plan::warnings(&tracer.report) {
        eprintln!("netstat: {w}");
    }
    rt.block_on(live_loop(cfg, &mut tracer))
}

async fn live_loop(cfg: &Config, tracer: &mut Tracer) -> anyhow::Result<ExitCode> {
    let interval = Duration::from_secs(cfg.interval.unwrap_or(1));
    let mut live = Live {
        cfg,
        table: Table::new(netns_inode(&cfg.proc_root), cfg.max_rows),
        exes: ExeCache { proc_root: cfg.proc_root.clone(), ..Default::default() },
        names: (!cfg.numeric).then(|| Resolver::new(Path::new("/etc"))),
        clock: realtime_offset_ns(),
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut batch = Vec::with_capacity(4096);
    let mut next = tokio::time::Instant::now();
    let mut seeded = false;
    loop {
        // Reconcile: snapshot, then every event the kernel already reported,
        // then the snapshot's verdict on rows no event touched since it began.
        // Only the seed asks /proc for owners: after it, the kernel says.
        let started = monotonic_ns();
        let mut snap = crate::snapshot::snapshot(cfg).context("reading sockets")?;
        if !seeded && (cfg.owner || cfg.executable) {
            let mut scan = ProcFdScan { proc_root: cfg.proc_root.clone() };
            scan.fill(&mut snap, cfg.executable);
            for c in &snap {
                if let Some(o) = &c.owner {
                    live.exes.by_pid.entry(o.pid).or_insert_with(|| o.exe.clone());
                }
            }
        }
        seeded = true;
        loop {
            let more = tracer.finish(&mut batch);
            for rec in batch.drain(..) {
                live.apply(&rec);
            }
            if !more {
                break;
            }
        }
        live.table.reconcile(snap.into_iter().map(SnapshotRow::from), started);
        live.render(&mut out)?;
        next += interval;
        loop {
            tokio::select! {
                _ = sigint.recv() => return Ok(ExitCode::SUCCESS),
                _ = sigterm.recv() => return Ok(ExitCode::SUCCESS),
                _ = sighup.recv() => return Ok(ExitCode::SUCCESS),
                _ = tokio::time::sleep_until(next) => break,
                r = tracer.next_batch(&mut batch) => r?,
            }
            for rec in batch.drain(..) {
                live.apply(&rec);
            }
        }
    }
}
