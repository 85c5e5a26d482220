//! The recorder's side of the store: one run row per recording (its start,
//! a heartbeat each batch, its stop), connection rows written in batches of
//! one transaction each (≤ 1 s apart: a crash loses at most the batch in
//! hand), processes and places written once and referred to by id, and
//! pruning oldest first (retention, size cap) in bounded steps, so readers
//! never stall it and it never stalls the ring.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use rusqlite::{Connection as Db, OptionalExtension, params, types::Value};

use super::{HistoryError, SPAN_OPEN, addr_value, flag, now_us, open_write, query, span_of, sql};
use crate::model::{
    CgroupInfo, Comm, Owner, Proto, SockId,
    history::{FinFirst, Recorded},
};

/// Events the kernel could not deliver (one `Record::Lost`).
#[derive(Debug, Clone)]
pub struct LostEvents {
    pub at_us: i64,
    pub reason: String,
    pub count: u64,
}

/// What one transaction writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// New rows, and rows written before (open) that changed: by id.
    pub rows: Vec<Recorded>,
    pub lost: Vec<LostEvents>,
}

/// How the store is kept small.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub retain_us: i64,
    pub max_bytes: Option<u64>,
}

/// What the previous recording left: its end, and the rows it left open.
pub struct Resume {
    /// When the previous run stopped, or its last heartbeat if it was
    /// killed. None for a new database.
    pub previous_end_us: Option<i64>,
    /// The rows left open, by socket; empty when the previous run was in
    /// another boot (cookies mean nothing across boots).
    pub open: HashMap<SockId, Recorded>,
    /// Rows left open that cannot continue (another boot).
    pub stale: Vec<Recorded>,
    pub next_id: i64,
}

/// The caches' keys are our own small records, not anyone's input.
type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<crate::model::IdHasher>>;

/// A process row's identity: everything it stores (no allocation to
/// build one: the exe path is shared, and compared as the same `Arc`).
#[derive(Hash, PartialEq, Eq)]
struct ProcKey {
    pid: u32,
    pid_start: Option<u64>,
    comm: Comm,
    exe: Option<SharedPath>,
    uid: Option<u32>,
    parent: Option<(u32, Comm)>,
    ns_pid: Option<u32>,
}

/// An exe path compared by identity: the recorder reads each process's
/// once, so the same process's rows share one `Arc` (another `Arc` of the
/// same path makes a second, identical procs row, never a wrong one).
#[derive(Clone)]
struct SharedPath(Arc<Path>);

impl PartialEq for SharedPath {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}
impl Eq for SharedPath {}
impl std::hash::Hash for SharedPath {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8 as usize).hash(h)
    }
}

/// A place row's identity: the namespace and the cgroup as resolved (a
/// cgroup id first seen unresolved gets a second row once it resolves).
#[derive(Hash, PartialEq, Eq)]
struct PlaceKey {
    netns: u32,
    cgroup: Option<(u64, bool)>,
}

pub struct Writer {
    db: Db,
    path: PathBuf,
    run: i64,
    procs: FastMap<ProcKey, i64>,
    places: FastMap<PlaceKey, i64>,
    retention: Retention,
    last_prune_us: i64,
    /// Every row written also goes into the outbox, for the forwarder
    /// (`--db postgresql://...`); retention keeps what it still holds.
    outbox: bool,
}

/// How often retention runs (each pass is bounded).
const PRUNE_EVERY_US: i64 = 2_000_000;
/// Rows one pruning statement removes at most.
const PRUNE_STEP: i64 = 20_000;

impl Writer {
    /// Open (or create) the store and start a run; what the previous run
    /// left open comes back for the recorder to continue or close.
    pub fn start(path: &Path, retention: Retention, boot_id: Option<&str>, outbox: bool) -> Result<(Writer, Resume), HistoryError> {
        let db = open_write(path)?;
        let e = sql(path);
        if outbox {
            // The store's own name in PostgreSQL: rows keep their ids there.
            // The outbox's sequence never goes back (AUTOINCREMENT), even
            // when the forwarder has emptied it: the cursor is a seq.
            let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid").map(|s| s.trim().to_string()).unwrap_or_else(|_| format!("{:x}-{}", now_us(), std::process::id()));
            db.execute_batch("CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, conn INTEGER NOT NULL);").map_err(&e)?;
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('store_id', ?1)", [id]).map_err(&e)?;
        }
        if let Some(max) = retention.max_bytes {
            // Keep the write-ahead log within the cap too.
            let limit = (max / 4).clamp(1 << 16, 64 << 20);
            db.execute_batch(&format!("PRAGMA journal_size_limit = {limit}; PRAGMA wal_autocheckpoint = {};", (limit / 4096).max(16)))
                .map_err(&e)?;
        }
        let prev: Option<(i64, Option<i64>, Option<String>)> = db
            .query_row("SELECT heartbeat_us, stopped_us, boot_id FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(&e)?;
        let same_boot = prev.as_ref().is_some_and(|p| p.2.is_some() && p.2.as_deref() == boot_id);
        let mut open = HashMap::new();
        let mut stale = Vec::new();
        for r in query::open_rows(&db, path)? {
            if same_boot && r.conn.id.cookie != 0 {
                open.insert(r.conn.id, r);
            } else {
                stale.push(r);
            }
        }
        let next_id: i64 = db.query_row("SELECT coalesce(max(id), 0) + 1 FROM conns", [], |r| r.get(0)).map_err(&e)?;
        let now = now_us();
        db.execute(
            "INSERT INTO runs(started_us, heartbeat_us, boot_id, pid, version) VALUES (?1, ?1, ?2, ?3, ?4)",
            params![now, boot_id, std::process::id(), env!("CARGO_PKG_VERSION")],
        )
        .map_err(&e)?;
        let run = db.last_insert_rowid();
        let resume = Resume { previous_end_us: prev.map(|p| p.1.unwrap_or(p.0)), open, stale, next_id };
        Ok((Writer { db, path: path.to_path_buf(), run, procs: FastMap::default(), places: FastMap::default(), retention, last_prune_us: now, outbox }, resume))
    }

    /// One transaction: the rows, the lost events, the heartbeat.
    pub fn write(&mut self, batch: &Batch) -> Result<(), HistoryError> {
        let path = self.path.clone();
        let e = sql(&path);
        let tx = self.db.transaction().map_err(&e)?;
        {
            // A row seen for the first time is a plain append; one written
            // before (open, or left by the last run) is replaced.
            for r in &batch.rows {
                let c = &r.conn;
                let holder = match &c.owner {
                    Some(o) => Some(proc_id(&tx, &mut self.procs, o, c.uid).map_err(&e)?),
                    None => None,
                };
                let creator = match c.owner.as_ref().and_then(|o| o.creator.as_ref()) {
                    Some(k) if !c.owner.as_ref().is_some_and(|o| o.same_process(k.pid, k.pid_start) && o.comm == k.comm) => {
                        let mut ko = Owner::new(k.pid, k.comm, crate::model::OwnerSource::Captured);
                        ko.pid_start = k.pid_start;
                        Some(proc_id(&tx, &mut self.procs, &ko, None).map_err(&e)?)
                    }
                    _ => None,
                };
                let cgroup = c.owner.as_ref().and_then(|o| o.cgroup.clone().or_else(|| o.cgroup_id.map(|id| Arc::new(CgroupInfo { id, ..Default::default() }))));
                let place = place_id(&tx, &mut self.places, c.id.netns, cgroup.as_deref()).map_err(&e)?;
                let lived = r.closed_us.map(|c| c - r.opened_us);
                let listed = r.listed_until_us().map(|u| u - r.opened_us);
                let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
                let row = [
                    Value::Integer(r.id),
                    Value::Integer(flags_of(r)),
                    Value::Integer(span_of(listed)),
                    Value::Integer(r.opened_us),
                    int(lived),
                    int(r.established_after_us),
                    int(r.closing_after_us),
                    addr_value(c.local.ip()),
                    Value::Integer(c.local.port() as i64),
                    addr_value(c.remote.ip()),
                    Value::Integer(c.remote.port() as i64),
                    int(c.state.map(i64::from)),
                    Value::Integer(r.end.code()),
                    int(r.bytes_sent.map(|b| b as i64)),
                    int(r.bytes_received.map(|b| b as i64)),
                    int(holder),
                    int(creator),
                    Value::Integer(place),
                    int((c.id.cookie != 0).then_some(c.id.cookie as i64)),
                ];
                insert_row(&tx, &row, r.stored).map_err(&e)?;
                if self.outbox {
                    tx.prepare_cached("INSERT INTO outbox(conn) VALUES (?1)").map_err(&e)?.execute([r.id]).map_err(&e)?;
                }
                if !r.holders.is_empty() {
                    tx.execute("DELETE FROM holders WHERE conn = ?1", [r.id]).map_err(&e)?;
                    for (since, o) in &r.holders {
                        let p = proc_id(&tx, &mut self.procs, o, c.uid).map_err(&e)?;
                        tx.execute("INSERT INTO holders(conn, since, proc) VALUES (?1, ?2, ?3)", params![r.id, since, p]).map_err(&e)?;
                    }
                }
            }
            let mut lost = tx.prepare_cached("INSERT INTO lost(at_us, reason, count) VALUES (?1, ?2, ?3)").map_err(&e)?;
            for l in &batch.lost {
                lost.execute(params![l.at_us, l.reason, l.count as i64]).map_err(&e)?;
            }
            tx.execute("UPDATE runs SET heartbeat_us = ?1 WHERE id = ?2", params![now_us(), self.run]).map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        let now = now_us();
        if now - self.last_prune_us >= PRUNE_EVERY_US {
            self.last_prune_us = now;
            self.prune(now)?;
        }
        Ok(())
    }

    /// The run's clean end.
    pub fn stop(self) -> Result<(), HistoryError> {
        let e = sql(&self.path);
        let now = now_us();
        self.db.execute("UPDATE runs SET heartbeat_us = ?1, stopped_us = ?1 WHERE id = ?2", params![now, self.run]).map_err(&e)?;
        // Fold the log back into the file, so readers that cannot create
        // the -shm file find it whole.
        let _ = self.db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        self.db.close().map_err(|(_, err)| HistoryError::Sqlite(self.path.clone(), err))
    }

    /// Retention, then the size cap, oldest first, a bounded step each.
    pub fn prune(&mut self, now: i64) -> Result<(), HistoryError> {
        let e = sql(&self.path);
        let horizon = now - self.retention.retain_us;
        let mut removed = 0usize;
        // Rows the forwarder has still to send stay.
        let kept = if self.outbox { " AND id NOT IN (SELECT conn FROM outbox)" } else { "" };
        {
            // Rows whose connection closed before the horizon, one bucket of
            // the interval index at a time (its range bounds the scan).
            let mut del = self
                .db
                .prepare_cached(&format!(
                    "DELETE FROM conns WHERE id IN (SELECT id FROM conns WHERE span = ?1 AND opened < ?2 AND opened + lived < ?2{kept} LIMIT ?3)"
                ))
                .map_err(&e)?;
            for b in 0..SPAN_OPEN {
                removed += del.execute(params![b, horizon, PRUNE_STEP]).map_err(&e)?;
            }
        }
        self.db.execute("DELETE FROM lost WHERE at_us < ?1", [horizon]).map_err(&e)?;
        self.db.execute("DELETE FROM runs WHERE coalesce(stopped_us, heartbeat_us) < ?1 AND id != ?2", params![horizon, self.run]).map_err(&e)?;
        self.set_pruned_before(horizon)?;
        if let Some(max) = self.retention.max_bytes {
            // Never more than a few steps per pass: the ring comes first.
            for _ in 0..8 {
                if self.used_bytes()? <= max {
                    break;
                }
                let (max_id, last_end): (Option<i64>, Option<i64>) = self
                    .db
                    .query_row(
                        "SELECT max(id), max(opened + lived) FROM (SELECT id, opened, lived FROM conns WHERE span != ?1 ORDER BY id LIMIT ?2)",
                        params![SPAN_OPEN, PRUNE_STEP / 4],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(&e)?;
                let Some(max_id) = max_id else { break };
                removed += self.db.execute(&format!("DELETE FROM conns WHERE id <= ?1 AND span != ?2{kept}"), params![max_id, SPAN_OPEN]).map_err(&e)?;
                if let Some(end) = last_end {
                    self.set_pruned_before(end)?;
                }
                let _ = self.db.execute_batch("PRAGMA incremental_vacuum;");
            }
        }
        if removed > 0 {
            self.db.execute("DELETE FROM holders WHERE conn < (SELECT coalesce(min(id), 0) FROM conns)", []).map_err(&e)?;
            let _ = self.db.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(PASSIVE);");
        }
        Ok(())
    }

    fn set_pruned_before(&self, t: i64) -> Result<(), HistoryError> {
        self.db
            .execute(
                "INSERT INTO meta(key, value) VALUES ('pruned_before_us', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                [t],
            )
            .map(|_| ())
            .map_err(sql(&self.path))
    }

    /// Bytes in use in the database file (free pages aside).
    pub fn used_bytes(&self) -> Result<u64, HistoryError> {
        let e = sql(&self.path);
        let pages: i64 = self.db.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(&e)?;
        let free: i64 = self.db.query_row("PRAGMA freelist_count", [], |r| r.get(0)).map_err(&e)?;
        let size: i64 = self.db.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(&e)?;
        Ok(((pages - free).max(0) * size) as u64)
    }
}

/// `conns` columns, in the order `insert_row` binds them.
const COLUMNS: usize = 19;
const INSERT: &str = "INSERT INTO conns(id, flags, span, opened, lived, estab, closing, laddr, lport, raddr, rport, state, end, sent, recv, holder, creator, place, cookie)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";
const REPLACE: &str = "INSERT OR REPLACE INTO conns(id, flags, span, opened, lived, estab, closing, laddr, lport, raddr, rport, state, end, sent, recv, holder, creator, place, cookie)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

fn insert_row(tx: &Db, row: &[Value; COLUMNS], replace: bool) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(if replace { REPLACE } else { INSERT })?;
    for (i, v) in row.iter().enumerate() {
        st.raw_bind_parameter(i + 1, v)?;
    }
    st.raw_execute()?;
    Ok(())
}

fn flags_of(r: &Recorded) -> i64 {
    let mut f = 0;
    if r.conn.proto == Proto::Udp {
        f |= flag::UDP;
    }
    if r.conn.ipv6 {
        f |= flag::IPV6;
    }
    if r.passive {
        f |= flag::PASSIVE;
    }
    if r.before_recording {
        f |= flag::BEFORE_RECORDING;
    }
    match r.fin_first {
        Some(FinFirst::Local) => f |= flag::FIN_LOCAL_FIRST,
        Some(FinFirst::Remote) => f |= flag::FIN_REMOTE_FIRST,
        None => {}
    }
    if !r.holders.is_empty() {
        f |= flag::HANDED_OVER;
    }
    f
}

fn proc_id(tx: &Db, cache: &mut FastMap<ProcKey, i64>, o: &Owner, uid: Option<u32>) -> rusqlite::Result<i64> {
    let key = ProcKey {
        pid: o.pid,
        pid_start: o.pid_start,
        comm: o.comm,
        exe: o.exe.clone().map(SharedPath),
        uid,
        parent: o.parent.as_ref().map(|p| (p.pid, p.comm)),
        ns_pid: o.ns_pid,
    };
    if let Some(id) = cache.get(&key) {
        return Ok(*id);
    }
    tx.prepare_cached(
        "INSERT INTO procs(pid, pid_start, comm, exe, uid, parent_pid, parent_comm, ns_pid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key.pid,
        key.pid_start.map(|s| s as i64),
        key.comm.as_bytes(),
        key.exe.as_ref().map(|p| p.0.as_os_str().as_encoded_bytes()),
        key.uid,
        key.parent.as_ref().map(|p| p.0),
        key.parent.as_ref().map(|p| p.1.as_bytes()),
        key.ns_pid,
    ])?;
    let id = tx.last_insert_rowid();
    if cache.len() > 100_000 {
        cache.clear();
    }
    cache.insert(key, id);
    Ok(id)
}

fn place_id(tx: &Db, cache: &mut FastMap<PlaceKey, i64>, netns: u32, cg: Option<&CgroupInfo>) -> rusqlite::Result<i64> {
    let key = PlaceKey { netns, cgroup: cg.map(|c| (c.id, c.path.is_some())) };
    if let Some(id) = cache.get(&key) {
        return Ok(*id);
    }
    let text = |s: Option<&str>| s.map(|s| Value::Text(s.to_string())).unwrap_or(Value::Null);
    let ct = cg.and_then(|c| c.container.as_ref());
    tx.prepare_cached(
        "INSERT INTO places(netns, cgroup_id, cgroup, unit, runtime, container, container_name, pod) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        (netns != 0).then_some(netns),
        cg.map(|c| c.id as i64),
        cg.and_then(|c| c.path.as_deref()),
        text(cg.and_then(|c| c.unit.as_deref())),
        text(ct.map(|c| c.runtime)),
        text(ct.map(|c| &*c.id)),
        ct.and_then(|c| c.name.as_deref()),
        text(ct.and_then(|c| c.pod.as_deref())),
    ])?;
    let id = tx.last_insert_rowid();
    if cache.len() > 100_000 {
        cache.clear();
    }
    cache.insert(key, id);
    Ok(id)
}
