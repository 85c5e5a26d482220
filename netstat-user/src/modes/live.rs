//! Interval mode with the tracer (`netstat -ano 2`): the live table is
//! seeded from a snapshot, kept current by kernel events between displays,
//! and reconciled with a fresh snapshot at every display. Each display shows
//! the table, then every connection that opened and/or closed since the last
//! one, with the owner the kernel captured (right even when the process has
//! exited). Owns the loop; the layouts are `render::{connections, closed}`.
use std::{
    collections::{HashMap, HashSet},
    io::{BufWriter, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use super::signals::Stop;
use crate::{
    cli::config::Config,
    model::{ClosedConnection, Connection, Owner, Proto, SockEvent, SockId},
    render,
    sources::{
        cgroup::Cgroups,
        netns::Labels,
        owners::{self, ExeCache, ProcFdScan},
        resolve::Resolver,
        snapshot,
    },
    table::Table,
    timefmt::{monotonic_ns, realtime_offset_ns},
    tracer::{Record, TracerOptions, drain::Drain, plan},
};

struct Live<'a> {
    cfg: &'a Config,
    table: Table,
    exes: ExeCache,
    cgroups: Cgroups,
    /// --all-namespaces: every namespace seen, labelled.
    labels: Option<Labels>,
    names: Option<Resolver>,
    clock: i128,
    /// The kernel reports hand-offs between transitions (hook tcp_holder:
    /// a send or receive names its process). Without it every owner is
    /// checked against /proc at each display.
    kernel_follows_sends: bool,
}

impl Live<'_> {
    /// Check the table's holders against /proc where one may have let go
    /// of its socket without the kernel seeing it: a process that is gone
    /// (or whose PID now names another), one that forked (its children hold
    /// its sockets too, and it may have closed its own copies), and every
    /// owner when the kernel cannot see sends. The sockets an owner no
    /// longer holds are looked for in its children, then in all of /proc;
    /// one that nobody holds keeps no owner (as `ss` shows it).
    fn verify_holders(&mut self) {
        let proc_root = &self.cfg.proc_root;
        let mut by_pid: HashMap<(u32, Option<u64>), Vec<(SockId, u64)>> = HashMap::new();
        for (id, inode, o) in self.table.held() {
            if inode != 0 {
                by_pid.entry((o.pid, o.pid_start)).or_default().push((id, inode));
            }
        }
        let mut lost: Vec<(SockId, u64)> = Vec::new();
        let mut found: HashMap<u64, u32> = HashMap::new();
        for ((pid, start), rows) in by_pid {
            let now_start = owners::start_of(proc_root, pid);
            let same = now_start.is_some() && (start.is_none() || start == now_start);
            let kids = if same { owners::children(proc_root, pid) } else { Vec::new() };
            if same && kids.is_empty() && self.kernel_follows_sends {
                continue;
            }
            let wanted: HashSet<u64> = rows.iter().map(|r| r.1).collect();
            let held = if same { owners::held_by(proc_root, pid, &wanted) } else { HashSet::new() };
            let gone: HashSet<u64> = wanted.difference(&held).copied().collect();
            if gone.is_empty() {
                continue;
            }
            found.extend(owners::scan_among(proc_root, &kids, &gone));
            lost.extend(rows.into_iter().filter(|r| gone.contains(&r.1)));
        }
        if lost.is_empty() {
            return;
        }
        let rest: HashSet<u64> = lost.iter().map(|r| r.1).filter(|i| !found.contains_key(i)).collect();
        if !rest.is_empty() {
            found.extend(owners::scan(proc_root, &rest));
        }
        let mut procs: HashMap<u32, Owner> = HashMap::new();
        for (id, inode) in lost {
            let holder = found.get(&inode).map(|&pid| {
                procs
                    .entry(pid)
                    .or_insert_with(|| {
                        let mut o = owners::process(proc_root, pid, self.cfg.executable);
                        owners::lineage(proc_root, &mut o, &mut self.cgroups);
                        o
                    })
                    .clone()
            });
            if let Some(h) = &holder {
                self.exes.insert(h);
            }
            self.table.set_holder(id, holder);
        }
    }

    fn apply(&mut self, rec: &Record) {
        match rec {
            Record::Event(e) => {
                let e = SockEvent::decode(e);
                if self.cfg.executable
                    && let Some(o) = &e.owner
                {
                    self.exes.note(o.pid, o.pid_start);
                }
                self.table.apply(&e);
            }
            Record::Lost { count, reason, noticed_ns } => self.table.note_lost(reason, *count, *noticed_ns),
            Record::Bad(_) => {}
        }
    }

    fn wanted_closed(&self, c: &ClosedConnection) -> bool {
        let proto = c.conn.proto;
        let proto_ok = match proto {
            Proto::Tcp => self.cfg.proto.tcp,
            Proto::Udp => self.cfg.proto.udp,
        };
        let fam_ok = if c.conn.ipv6 { self.cfg.family.v6() } else { self.cfg.family.v4() };
        proto_ok && fam_ok && (self.cfg.all || proto == Proto::Tcp)
    }

    fn render(&mut self, w: &mut impl Write) -> std::io::Result<()> {
        let pid = |o: &Option<Owner>| self.cfg.pid_matches(o.as_ref().map(|o| o.pid));
        // Rows with an owner are filled in below (copies: what /proc adds is
        // for this display); the rest, most of a busy table (TIME_WAIT), are
        // shown as they are.
        let mut held: Vec<Connection> = self.table.live().filter(|c| c.owner.is_some() && pid(&c.owner)).cloned().collect();
        let mut closed_rows: Vec<ClosedConnection> =
            self.table.take_closed().into_iter().filter(|c| self.wanted_closed(c) && pid(&c.conn.owner)).collect();
        closed_rows.sort_by_key(|c| c.closed_ns);
        for (o, live_row) in held
            .iter_mut()
            .filter_map(|c| c.owner.as_mut().map(|o| (o, true)))
            .chain(closed_rows.iter_mut().filter_map(|c| c.conn.owner.as_mut().map(|o| (o, false))))
        {
            self.exes.fill(o);
            if o.cgroup.is_none()
                && let Some(id) = o.cgroup_id
            {
                o.cgroup = Some(self.cgroups.resolve(&self.cfg.proc_root, id, o.pid));
            }
            // -b -v: the lineage of holders alive now (closed rows show the
            // parent the kernel captured).
            if self.cfg.executable && self.cfg.verbose && live_row {
                owners::fill_ancestors(&self.cfg.proc_root, o, &mut self.cgroups);
            }
        }
        let t = &self.table;
        let conns: Vec<&Connection> = held.iter().chain(t.live().filter(|c| c.owner.is_none() && pid(&c.owner))).collect();
        let display = render::live::LiveDisplay {
            now_ns: monotonic_ns(),
            clock_offset_ns: self.clock,
            conns: &conns,
            closed: &closed_rows,
            lost_events: t.lost_events,
            lost_since_ns: t.lost_since_ns,
            lost_by_reason: &t.lost_by_reason,
            dropped: t.dropped,
            labels: self.labels.as_ref(),
        };
        render::live::write(&display, self.cfg, self.names.as_ref(), w)?;
        w.flush()
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
/// one line on stderr when the tracer cannot start, or when sockets can only
/// be read from /proc/net (no socket cookies there to match events with).
pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    if let Err(e) = snapshot::with_cookies(cfg) {
        eprintln!("netstat: tracing unavailable ({}); showing snapshots", crate::tracer::one_line(&e.to_string()));
        return super::display::run(cfg);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The ring is drained on a thread of its own: a display never holds the
    // kernel's events back (tracer/drain.rs).
    let mut drain = match Drain::start(&TracerOptions::from_config(cfg).with_listeners()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("netstat: tracing unavailable ({}); showing snapshots", crate::tracer::one_line(&format!("{e:#}")));
            return super::display::run(cfg);
        }
    };
    for w in plan::warnings(&drain.report) {
        eprintln!("netstat: {w}");
    }
    rt.block_on(live_loop(cfg, &mut drain))
}

async fn live_loop(cfg: &Config, tracer: &mut Drain) -> anyhow::Result<ExitCode> {
    let interval = Duration::from_secs(cfg.interval.unwrap_or(1));
    let kernel_follows_sends =
        tracer.report.iter().any(|h| h.hook == "tcp_holder" && matches!(h.status, crate::tracer::HookStatus::Attached));
    let owners_shown = cfg.owner || cfg.executable || cfg.pid.is_some() || cfg.json;
    let mut live = Live {
        kernel_follows_sends,
        cfg,
        table: Table::new(crate::sources::netns::scope(cfg), cfg.max_rows),
        exes: ExeCache::new(&cfg.proc_root),
        cgroups: Cgroups::new(&cfg.proc_root, &cfg.runtime_root),
        labels: cfg.all_namespaces.then(Labels::default),
        names: (!cfg.numeric).then(|| Resolver::system(&cfg.proc_root)),
        clock: realtime_offset_ns(),
    };
    let mut stop = Stop::install()?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut batch = Vec::with_capacity(4096);
    let mut next = tokio::time::Instant::now();
    let mut seeded = false;
    loop {
        // Reconcile: snapshot, then every event the kernel already reported,
        // then the snapshot's verdict on rows no event touched since it began.
        // Only the seed asks /proc for owners: after it, the kernel says.
        let started = monotonic_ns();
        let mut snap = if cfg.all_namespaces {
            let (snap, spaces) = snapshot::all_namespaces(cfg).context("reading sockets")?;
            if let Some(l) = &mut live.labels {
                l.extend(&spaces);
            }
            snap
        } else {
            snapshot::with_cookies(cfg).context("reading sockets")?
        };
        if !seeded && (cfg.owner || cfg.executable || cfg.pid.is_some() || cfg.json) {
            ProcFdScan { proc_root: cfg.proc_root.clone() }.fill_with(&mut snap, cfg.executable, Some(&mut live.cgroups));
            for o in snap.iter().filter_map(|c| c.owner.as_ref()) {
                live.exes.insert(o);
            }
        }
        seeded = true;
        tracer.sync(&mut batch).await?;
        for rec in batch.drain(..) {
            live.apply(&rec);
        }
        live.table.reconcile(snap, started);
        if owners_shown {
            live.verify_holders();
        }
        live.render(&mut out)?;
        next += interval;
        loop {
            tokio::select! {
                _ = stop.recv() => return Ok(ExitCode::SUCCESS),
                _ = tokio::time::sleep_until(next) => break,
                r = tracer.next(&mut batch) => r?,
            }
            for rec in batch.drain(..) {
                live.apply(&rec);
            }
        }
    }
}
