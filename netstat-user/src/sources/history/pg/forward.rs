//! The forwarder: what the recorder wrote into its local SQLite store goes
//! on to PostgreSQL, in the order it was written, exactly once. The local
//! store keeps an outbox (the ids of rows written, in order); each pass
//! reads the next rows from it and writes them to PostgreSQL in one
//! transaction together with this source's cursor, so a pass that fails
//! anywhere (the server stopped, the network gone) leaves nothing behind,
//! and a pass replayed after a reconnect or a restart replaces the rows it
//! wrote before instead of adding them again. While the server is away the
//! recorder goes on writing locally, and local retention keeps what is
//! still to forward.
use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use postgres::{Client, binary_copy::BinaryCopyInWriter, types::{ToSql, Type}};
use rusqlite::{Connection as Db, OpenFlags, types::Value};

use super::{OPEN_UNTIL, Schema, Target, ensure_partitions, migrate, partition_index, pg_message, prune};
use crate::{
    model::history::TIME_WAIT_US,
    sources::history::{SPAN_OPEN, addr_from, flag, now_us},
};

/// Rows one pass takes from the outbox at most.
const PASS_ROWS: i64 = 20_000;
/// How often an idle forwarder looks for new rows.
const IDLE: Duration = Duration::from_millis(500);
/// How long to wait before trying an unreachable server again.
const RETRY: Duration = Duration::from_secs(2);
/// How often retention runs in PostgreSQL: twice per partition width,
/// between 1 s and 60 s.
fn prune_every(s: &Schema) -> Duration {
    Duration::from_micros((s.partition_us / 2).clamp(1_000_000, 60_000_000) as u64)
}
/// At the recorder's stop: how long to go on forwarding what is left.
const DRAIN: Duration = Duration::from_secs(20);

pub struct Forwarder {
    pub target: Target,
    pub host: String,
    /// The local store (its `meta.store_id` names it in PostgreSQL).
    pub local: PathBuf,
    pub retain_us: i64,
}

/// What a forwarder did, for the recorder's last line.
#[derive(Debug, Default)]
pub struct Forwarded {
    pub rows: u64,
    /// Rows still in the outbox when it stopped (the next run sends them).
    pub waiting: u64,
}

/// One connected session.
struct Session {
    client: Client,
    schema: Schema,
    src: i32,
    partitions: HashSet<i64>,
    pruned_at: Instant,
}

enum Failure {
    Pg(postgres::Error),
    Local(rusqlite::Error),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Pg(e)
    }
}
impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Local(e)
    }
}

impl Forwarder {
    /// Forward until `stop` fires (or its sender is dropped), then what is
    /// left, for at most `DRAIN`.
    pub fn run(self, stop: mpsc::Receiver<()>) -> Forwarded {
        let mut done = Forwarded::default();
        let local = match open_local(&self.local) {
            Ok(db) => db,
            Err(e) => {
                eprintln!("netstat: forwarding to {}: the local store: {e}", self.target.shown);
                return done;
            }
        };
        let store: String = match local.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| r.get(0)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("netstat: forwarding to {}: the local store has no id: {e}", self.target.shown);
                return done;
            }
        };
        let mut session: Option<Session> = None;
        let mut down: Option<(Instant, u64)> = None;
        let mut stopping: Option<Instant> = None;
        loop {
            if stopping.is_none() {
                match stop.try_recv() {
                    Ok(()) | Err(mpsc::TryRecvError::Disconnected) => stopping = Some(Instant::now()),
                    Err(mpsc::TryRecvError::Empty) => {}
                }
            }
            if stopping.is_some_and(|s| s.elapsed() > DRAIN) {
                break;
            }
            if session.is_none() {
                match self.open(&store) {
                    Ok(s) => session = Some(s),
                    Err(why) => {
                        if down.is_none() {
                            eprintln!("netstat: {}: {why}; recording locally, forwarding when it is back", self.target.shown);
                            down = Some((Instant::now(), done.rows));
                        }
                        if stopping.is_some() {
                            break;
                        }
                        let _ = stop.recv_timeout(RETRY).map(|()| stopping.get_or_insert_with(Instant::now));
                        continue;
                    }
                }
            }
            let s = session.as_mut().expect("connected above");
            match pass(s, &local) {
                Ok(n) => {
                    done.rows += n as u64;
                    if let Some((since, _)) = down.take() {
                        eprintln!(
                            "netstat: {}: back after {:.1} s; forwarding what was recorded meanwhile",
                            self.target.shown,
                            since.elapsed().as_secs_f64()
                        );
                    }
                    if s.pruned_at.elapsed() >= prune_every(&s.schema) {
                        s.pruned_at = Instant::now();
                        if let Err(e) = prune(&mut s.client, &s.schema, s.src, now_us() - self.retain_us) {
                            eprintln!("netstat: {}: retention: {}", self.target.shown, pg_message(&e));
                        }
                    }
                    if n as i64 >= PASS_ROWS {
                        continue;
                    }
                    if stopping.is_some() {
                        break;
                    }
                    let _ = stop.recv_timeout(IDLE).map(|()| stopping.get_or_insert_with(Instant::now));
                }
                Err(f) => {
                    let why = match f {
                        Failure::Pg(e) => pg_message(&e),
                        Failure::Local(e) => format!("the local store: {e}"),
                    };
                    if down.is_none() {
                        eprintln!("netstat: {}: {why}; recording locally, forwarding when it is back", self.target.shown);
                        down = Some((Instant::now(), done.rows));
                    }
                    session = None;
                    if stopping.is_some_and(|s| s.elapsed() > DRAIN) {
                        break;
                    }
                    let _ = stop.recv_timeout(RETRY).map(|()| stopping.get_or_insert_with(Instant::now));
                }
            }
        }
        done.waiting = local
            .query_row(
                "SELECT count(*) FROM outbox",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0) as u64;
        done
    }

    fn open(&self, store: &str) -> Result<Session, String> {
        let mut client = self.target.connect().map_err(|e| e.to_string())?;
        let schema = migrate(&mut client, &self.target, self.retain_us).map_err(|e| e.to_string())?;
        let host = &self.host;
        client
            .execute("INSERT INTO netstat.sources(host, store) VALUES ($1, $2) ON CONFLICT (host, store) DO NOTHING", &[host, &store])
            .map_err(|e| pg_message(&e))?;
        let src: i32 = client
            .query_one("SELECT id FROM netstat.sources WHERE host = $1 AND store = $2", &[host, &store])
            .map_err(|e| pg_message(&e))?
            .get(0);
        Ok(Session { client, schema, src, partitions: HashSet::new(), pruned_at: Instant::now() - Duration::from_secs(3600) })
    }
}

fn open_local(path: &std::path::Path) -> rusqlite::Result<Db> {
    let db = Db::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Blob(b) => Some(b.clone()),
        Value::Text(t) => Some(t.clone().into_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t.clone()),
        Value::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Rows of `q` as values.
fn rows(db: &Db, q: &str, args: impl rusqlite::Params, width: usize) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut st = db.prepare_cached(q)?;
    let out = st.query_map(args, |r| (0..width).map(|i| r.get::<_, Value>(i)).collect::<rusqlite::Result<Vec<_>>>())?.collect();
    out
}

/// `conns` columns as the outbox query lists them after `o.seq`.
const CONN_COLS: &str = "c.id, c.flags, c.span, c.opened, c.lived, c.estab, c.closing, c.laddr, c.lport, c.raddr, c.rport, c.state, c.end, c.sent, c.recv, c.holder, c.creator, c.place, c.cookie";

/// One pass: the next rows of the outbox, with the processes, places,
/// holders, lost events and runs they need, in one PostgreSQL transaction
/// with the cursor. Returns the outbox entries forwarded.
fn pass(s: &mut Session, local: &Db) -> Result<usize, Failure> {
    let mut tx = s.client.transaction()?;
    let cur = tx.query_one("SELECT conns_seq, conns_max, procs, places, lost FROM netstat.sources WHERE id = $1 FOR UPDATE", &[&s.src])?;
    let (seq0, max0, procs0, places0, lost0): (i64, i64, i64, i64, i64) = (cur.get(0), cur.get(1), cur.get(2), cur.get(3), cur.get(4));

    // One consistent read of the local store.
    let ltx = local.unchecked_transaction()?;
    let out = rows(
        &ltx,
        &format!("SELECT o.seq, {CONN_COLS} FROM outbox o LEFT JOIN conns c ON c.id = o.conn WHERE o.seq > ?1 ORDER BY o.seq LIMIT ?2"),
        rusqlite::params![seq0, PASS_ROWS],
        20,
    )?;
    let procs = rows(
        &ltx,
        "SELECT id, pid, pid_start, comm, exe, uid, parent_pid, parent_comm, ns_pid FROM procs WHERE id > ?1 ORDER BY id",
        [procs0],
        9,
    )?;
    let places = rows(
        &ltx,
        "SELECT id, netns, cgroup_id, cgroup, unit, runtime, container, container_name, pod FROM places WHERE id > ?1 ORDER BY id",
        [places0],
        9,
    )?;
    let lost = rows(&ltx, "SELECT id, at_us, reason, count FROM lost WHERE id > ?1 ORDER BY id", [lost0], 4)?;
    let runs = rows(&ltx, "SELECT id, started_us, heartbeat_us, stopped_us, boot_id, pid, version FROM runs ORDER BY id", [], 7)?;
    // The last version of each row in this pass (a row written open and
    // again closed is in the outbox twice; its row is the latest either way).
    let last_seq = out.last().and_then(|r| int(&r[0])).unwrap_or(seq0);
    let mut conns: BTreeMap<i64, &[Value]> = BTreeMap::new();
    for r in &out {
        if let Some(id) = int(&r[1]) {
            conns.insert(id, &r[1..]);
        }
    }
    let mut holders = Vec::new();
    for (id, c) in &conns {
        if int(&c[1]).unwrap_or(0) & flag::HANDED_OVER != 0 {
            holders.extend(rows(&ltx, "SELECT conn, since, proc FROM holders WHERE conn = ?1 ORDER BY since", [id], 3)?);
        }
    }
    drop(ltx);

    // Partitions for every row's listed end.
    let until = |c: &[Value]| -> i64 {
        let span = int(&c[2]).unwrap_or(SPAN_OPEN);
        match (span, int(&c[3]), int(&c[4])) {
            (SPAN_OPEN, _, _) | (_, _, None) => OPEN_UNTIL,
            (_, Some(opened), Some(lived)) => {
                let tw = int(&c[11]) == Some(netstat_common::tcp_state::TIME_WAIT as i64);
                opened + lived + if tw { TIME_WAIT_US } else { 0 }
            }
            _ => OPEN_UNTIL,
        }
    };
    let mut need: Vec<i64> = conns.values().filter_map(|c| partition_index(until(c), &s.schema)).filter(|i| !s.partitions.contains(i)).collect();
    need.sort_unstable();
    need.dedup();
    ensure_partitions(&mut tx, &s.schema, &need)?;

    let src = s.src;
    if !procs.is_empty() {
        let sink = tx.copy_in("COPY netstat.procs(src, id, pid, pid_start, comm, exe, uid, parent_pid, parent_comm, ns_pid) FROM STDIN BINARY")?;
        let mut w = BinaryCopyInWriter::new(
            sink,
            &[Type::INT4, Type::INT8, Type::INT8, Type::INT8, Type::BYTEA, Type::BYTEA, Type::INT8, Type::INT8, Type::BYTEA, Type::INT8],
        );
        for p in &procs {
            let comm = bytes(&p[3]).unwrap_or_default();
            w.write(&[&src, &int(&p[0]), &int(&p[1]).unwrap_or(0), &int(&p[2]), &comm, &bytes(&p[4]), &int(&p[5]), &int(&p[6]), &bytes(&p[7]), &int(&p[8])])?;
        }
        w.finish()?;
    }
    if !places.is_empty() {
        let sink = tx.copy_in("COPY netstat.places(src, id, netns, cgroup_id, cgroup, unit, runtime, container, container_name, pod) FROM STDIN BINARY")?;
        let mut w = BinaryCopyInWriter::new(
            sink,
            &[Type::INT4, Type::INT8, Type::INT8, Type::INT8, Type::BYTEA, Type::TEXT, Type::TEXT, Type::TEXT, Type::BYTEA, Type::TEXT],
        );
        for p in &places {
            w.write(&[&src, &int(&p[0]), &int(&p[1]), &int(&p[2]), &bytes(&p[3]), &text(&p[4]), &text(&p[5]), &text(&p[6]), &bytes(&p[7]), &text(&p[8])])?;
        }
        w.finish()?;
    }
    // Rows this source may have sent before (written open, or a pass
    // replayed after a failure) are replaced.
    let again: Vec<i64> = conns.keys().copied().filter(|id| *id <= max0).collect();
    if !again.is_empty() {
        tx.execute("DELETE FROM netstat.conns WHERE src = $1 AND id = ANY($2)", &[&src, &again])?;
        tx.execute("DELETE FROM netstat.holders WHERE src = $1 AND conn = ANY($2)", &[&src, &again])?;
    }
    if !conns.is_empty() {
        let sink = tx.copy_in(
            "COPY netstat.conns(src, id, flags, span, opened, until_us, lived, estab, closing, laddr, lport, raddr, rport, state, \"end\", sent, recv, holder, creator, place, cookie) FROM STDIN BINARY",
        )?;
        let types = [
            Type::INT4, Type::INT8, Type::INT4, Type::INT2, Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::INT8,
            Type::INET, Type::INT4, Type::INET, Type::INT4, Type::INT2, Type::INT2,
            Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::INT8,
        ];
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for (id, c) in &conns {
            let flags = int(&c[1]).unwrap_or(0);
            let ip = |v: &Value| -> IpAddr {
                match (flags & flag::IPV6 != 0, addr_from(v)) {
                    (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                    (_, a) => a,
                }
            };
            let small = |v: &Value| int(v).map(|i| i as i16);
            let port = |v: &Value| int(v).map(|i| i as i32);
            let row: [&(dyn ToSql + Sync); 21] = [
                &src,
                id,
                &(flags as i32),
                &(int(&c[2]).unwrap_or(SPAN_OPEN) as i16),
                &int(&c[3]).unwrap_or(0),
                &until(c),
                &int(&c[4]),
                &int(&c[5]),
                &int(&c[6]),
                &ip(&c[7]),
                &port(&c[8]),
                &ip(&c[9]),
                &port(&c[10]),
                &small(&c[11]),
                &(int(&c[12]).unwrap_or(0) as i16),
                &int(&c[13]),
                &int(&c[14]),
                &int(&c[15]),
                &int(&c[16]),
                &int(&c[17]),
                &int(&c[18]),
            ];
            w.write(&row)?;
        }
        w.finish()?;
    }
    if !holders.is_empty() {
        let sink = tx.copy_in("COPY netstat.holders(src, conn, since, proc) FROM STDIN BINARY")?;
        let mut w = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::INT8, Type::INT8, Type::INT8]);
        for h in &holders {
            w.write(&[&src, &int(&h[0]), &int(&h[1]).unwrap_or(0), &int(&h[2])])?;
        }
        w.finish()?;
    }
    if !lost.is_empty() {
        let sink = tx.copy_in("COPY netstat.lost(src, id, at_us, reason, count) FROM STDIN BINARY")?;
        let mut w = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::INT8, Type::INT8, Type::TEXT, Type::INT8]);
        for l in &lost {
            w.write(&[&src, &int(&l[0]), &int(&l[1]).unwrap_or(0), &text(&l[2]).unwrap_or_default(), &int(&l[3]).unwrap_or(0)])?;
        }
        w.finish()?;
    }
    {
        let st = tx.prepare(
            "INSERT INTO netstat.runs(src, id, started_us, heartbeat_us, stopped_us, boot_id, pid, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (src, id) DO UPDATE SET heartbeat_us = excluded.heartbeat_us, stopped_us = excluded.stopped_us",
        )?;
        for r in &runs {
            tx.execute(&st, &[&src, &int(&r[0]), &int(&r[1]).unwrap_or(0), &int(&r[2]).unwrap_or(0), &int(&r[3]), &text(&r[4]), &int(&r[5]), &text(&r[6])])?;
        }
    }
    let max_id = conns.keys().next_back().copied().unwrap_or(0).max(max0);
    let procs_to = procs.last().and_then(|p| int(&p[0])).unwrap_or(procs0);
    let places_to = places.last().and_then(|p| int(&p[0])).unwrap_or(places0);
    let lost_to = lost.last().and_then(|l| int(&l[0])).unwrap_or(lost0);
    tx.execute(
        "UPDATE netstat.sources SET conns_seq = $2, conns_max = $3, procs = $4, places = $5, lost = $6 WHERE id = $1",
        &[&src, &last_seq, &max_id, &procs_to, &places_to, &lost_to],
    )?;
    tx.commit()?;
    s.partitions.extend(need);
    // What PostgreSQL holds leaves the outbox (a crash before this line
    // only makes the next pass skip them by the cursor).
    if last_seq > seq0 {
        local.execute("DELETE FROM outbox WHERE seq <= ?1", [last_seq])?;
    }
    Ok(out.len())
}
