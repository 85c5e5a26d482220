//! Reading the store: connection lifetimes in a time range (through the
//! interval index), the table at an instant, and the gaps in the record
//! (time nobody recorded, retention's horizon, lost events).
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

use rusqlite::{Connection as Db, Row, types::Value};

use super::{HistoryError, SPAN_OPEN, addr_forms, addr_from, flag, now_us, sql};
use crate::model::{
    CgroupInfo, Comm, Connection, Container, Owner, OwnerSource, Process, Proto, SockId,
    history::{End, FinFirst, Recorded},
};
pub use crate::model::history::{Gap, GapKind};

/// What a query selects. Times are unix µs; a bound left out is open.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub remote: Option<(IpAddr, Option<u16>)>,
    pub local: Option<(IpAddr, Option<u16>)>,
    pub port: Option<u16>,
    /// Holder or creator.
    pub pid: Option<u32>,
    pub comm: Option<Vec<u8>>,
    pub unit: Option<String>,
    pub tcp: bool,
    pub udp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Count a TIME_WAIT after an active close as listed (the table at an
    /// instant), not only the connection's own life (--history).
    pub listed: bool,
}

const SELECT: &str = "SELECT c.id, c.flags, c.opened, c.lived, c.estab, c.closing, c.laddr, c.lport, c.raddr, c.rport, c.state, c.end,
    c.sent, c.recv, c.cookie,
    h.pid, h.pid_start, h.comm, h.exe, h.uid, h.parent_pid, h.parent_comm, h.ns_pid,
    k.pid, k.pid_start, k.comm,
    p.netns, p.cgroup_id, p.cgroup, p.unit, p.runtime, p.container, p.container_name, p.pod
  FROM conns c LEFT JOIN procs h ON h.id = c.holder LEFT JOIN procs k ON k.id = c.creator LEFT JOIN places p ON p.id = c.place";

/// The rows a run left open (the recorder's resume).
pub fn open_rows(db: &Db, path: &Path) -> Result<Vec<Recorded>, HistoryError> {
    run(db, path, &format!("{SELECT} WHERE c.span = ?1 ORDER BY c.id"), &[Value::Integer(SPAN_OPEN)])
}

/// Lifetimes matching `f`, oldest first.
pub fn lifetimes(db: &Db, path: &Path, f: &Filter) -> Result<Vec<Recorded>, HistoryError> {
    let mut wh: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let arg = |args: &mut Vec<Value>, v: Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    let forms = |args: &mut Vec<Value>, a: IpAddr| -> String {
        addr_forms(a).into_iter().map(|v| arg(args, v)).collect::<Vec<_>>().join(", ")
    };
    if let Some((a, port)) = f.remote {
        // The remote-address index is the way in.
        wh.push(format!("c.raddr IN ({})", forms(&mut args, a)));
        if let Some(p) = port {
            wh.push(format!("c.rport = {}", arg(&mut args, Value::Integer(p as i64))));
        }
    } else if f.since_us.is_some() || f.until_us.is_some() {
        // One range of the interval index per bucket (`span_of`).
        let since = f.since_us.unwrap_or(i64::MIN / 2);
        let until = f.until_us.unwrap_or(i64::MAX / 2);
        let u = arg(&mut args, Value::Integer(until));
        let mut terms = Vec::new();
        for b in 0..SPAN_OPEN {
            let lo = since.saturating_sub(1i64 << b.min(62));
            terms.push(format!("(c.span = {b} AND c.opened >= {lo} AND c.opened <= {u})"));
        }
        terms.push(format!("(c.span = {SPAN_OPEN} AND c.opened <= {u})"));
        wh.push(format!("({})", terms.join(" OR ")));
    }
    if let Some((a, port)) = f.local {
        wh.push(format!("c.laddr IN ({})", forms(&mut args, a)));
        if let Some(p) = port {
            wh.push(format!("c.lport = {}", arg(&mut args, Value::Integer(p as i64))));
        }
    }
    if let Some(p) = f.port {
        let p = arg(&mut args, Value::Integer(p as i64));
        wh.push(format!("(c.lport = {p} OR c.rport = {p})"));
    }
    if let Some(pid) = f.pid {
        let p = arg(&mut args, Value::Integer(pid as i64));
        wh.push(format!("(h.pid = {p} OR k.pid = {p})"));
    }
    if let Some(comm) = &f.comm {
        let c = arg(&mut args, Value::Blob(comm.clone()));
        wh.push(format!("(h.comm = {c} OR k.comm = {c})"));
    }
    if let Some(unit) = &f.unit {
        wh.push(format!("p.unit = {}", arg(&mut args, Value::Text(unit.clone()))));
    }
    match (f.tcp, f.udp) {
        (true, false) => wh.push(format!("(c.flags & {}) = 0", flag::UDP)),
        (false, true) => wh.push(format!("(c.flags & {}) != 0", flag::UDP)),
        _ => {}
    }
    match (f.ipv4, f.ipv6) {
        (true, false) => wh.push(format!("(c.flags & {}) = 0", flag::IPV6)),
        (false, true) => wh.push(format!("(c.flags & {}) != 0", flag::IPV6)),
        _ => {}
    }
    let mut q = SELECT.to_string();
    if !wh.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&wh.join(" AND "));
    }
    q.push_str(" ORDER BY c.opened, c.id");
    let mut rows = run(db, path, &q, &args)?;
    // The exact overlap (the index range is a superset).
    rows.retain(|r| {
        let end = if f.listed { r.listed_until_us() } else { r.closed_us };
        f.until_us.is_none_or(|u| r.opened_us <= u) && f.since_us.is_none_or(|s| end.is_none_or(|e| e >= s))
    });
    Ok(rows)
}

/// The table as netstat would have listed it at unix µs `t`.
pub fn table_at(db: &Db, path: &Path, t: i64, f: &Filter) -> Result<Vec<Recorded>, HistoryError> {
    let f = Filter { since_us: Some(t), until_us: Some(t), listed: true, ..f.clone() };
    let mut rows = lifetimes(db, path, &f)?;
    rows.retain(|r| r.listed_at(t));
    Ok(rows)
}

fn run(db: &Db, path: &Path, q: &str, args: &[Value]) -> Result<Vec<Recorded>, HistoryError> {
    let e = sql(path);
    let mut st = db.prepare(q).map_err(&e)?;
    let mut out: Vec<Recorded> = st.query_map(rusqlite::params_from_iter(args.iter()), decode).map_err(&e)?.collect::<Result<_, _>>().map_err(&e)?;
    let mut hs = db
        .prepare("SELECT h.since, p.pid, p.pid_start, p.comm, p.exe, p.uid, p.parent_pid, p.parent_comm, p.ns_pid FROM holders h LEFT JOIN procs p ON p.id = h.proc WHERE h.conn = ?1 ORDER BY h.since")
        .map_err(&e)?;
    for r in out.iter_mut().filter(|r| r.handed_over) {
        let cg = r.conn.owner.as_ref().and_then(|o| o.cgroup.clone());
        r.holders = hs
            .query_map([r.id], |row| {
                let mut o = owner_at(row, 1)?.unwrap_or_else(|| Owner::new(0, Comm::default(), OwnerSource::Captured));
                o.cgroup = cg.clone();
                Ok((row.get::<_, i64>(0)?, o))
            })
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
    }
    Ok(out)
}

fn blob(row: &Row, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(match row.get::<_, Value>(i)? {
        Value::Blob(b) => Some(b),
        Value::Text(t) => Some(t.into_bytes()),
        _ => None,
    })
}

/// A holder from the procs columns starting at `i` (pid, pid_start, comm,
/// exe, uid, parent_pid, parent_comm, ns_pid).
fn owner_at(row: &Row, i: usize) -> rusqlite::Result<Option<Owner>> {
    let Some(pid) = row.get::<_, Option<u32>>(i)? else { return Ok(None) };
    let comm = Comm::new(&blob(row, i + 2)?.unwrap_or_default());
    let mut o = Owner::new(pid, comm, OwnerSource::Captured);
    o.pid_start = row.get::<_, Option<i64>>(i + 1)?.map(|s| s as u64);
    o.exe = match blob(row, i + 3)? {
        Some(b) => {
            use std::os::unix::ffi::OsStrExt;
            Some(Arc::from(Path::new(std::ffi::OsStr::from_bytes(&b))))
        }
        None => None,
    };
    if let Some(ppid) = row.get::<_, Option<u32>>(i + 5)? {
        o.parent = Some(Process { pid: ppid, comm: Comm::new(&blob(row, i + 6)?.unwrap_or_default()), pid_start: None });
    }
    o.ns_pid = row.get(i + 7)?;
    Ok(Some(o))
}

fn decode(row: &Row) -> rusqlite::Result<Recorded> {
    let flags: i64 = row.get(1)?;
    let ipv6 = flags & flag::IPV6 != 0;
    let opened: i64 = row.get(2)?;
    let lived: Option<i64> = row.get(3)?;
    let ip = |v: Value| -> IpAddr {
        let a = addr_from(&v);
        match (ipv6, a) {
            (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => a,
        }
    };
    let local = SocketAddr::new(ip(row.get(6)?), row.get::<_, Option<u16>>(7)?.unwrap_or(0));
    let remote = SocketAddr::new(ip(row.get(8)?), row.get::<_, Option<u16>>(9)?.unwrap_or(0));
    let uid: Option<u32> = row.get(19)?;
    let mut owner = owner_at(row, 15)?;
    let creator = match row.get::<_, Option<u32>>(23)? {
        Some(pid) => Some(Process {
            pid,
            pid_start: row.get::<_, Option<i64>>(24)?.map(|s| s as u64),
            comm: Comm::new(&blob(row, 25)?.unwrap_or_default()),
        }),
        // Not stored when the holder made it.
        None => owner.as_ref().map(|o| Process { pid: o.pid, comm: o.comm, pid_start: o.pid_start }),
    };
    let netns: Option<u32> = row.get(26)?;
    let cgroup_id: Option<i64> = row.get(27)?;
    if let Some(o) = owner.as_mut() {
        o.creator = creator;
        if let Some(id) = cgroup_id {
            let text = |i: usize| -> rusqlite::Result<Option<Box<str>>> { Ok(row.get::<_, Option<String>>(i)?.map(Into::into)) };
            let container = match (text(30)?, text(31)?) {
                (Some(rt), Some(cid)) => Some(Container {
                    runtime: crate::sources::cgroup::runtime_name(&rt),
                    id: cid,
                    name: blob(row, 32)?.map(Into::into),
                    pod: text(33)?,
                }),
                _ => None,
            };
            let path = blob(row, 28)?.map(Into::into);
            o.cgroup_id = Some(id as u64);
            o.cgroup = Some(Arc::new(CgroupInfo {
                id: id as u64,
                gone: path.is_none(),
                path,
                unit: text(29)?,
                container,
                encoded: Default::default(),
            }));
        }
    }
    let conn = Connection {
        proto: if flags & flag::UDP != 0 { Proto::Udp } else { Proto::Tcp },
        ipv6,
        local,
        remote,
        state: row.get(10)?,
        id: SockId { netns: netns.unwrap_or(0), cookie: row.get::<_, Option<i64>>(14)?.unwrap_or(0) as u64 },
        inode: 0,
        uid,
        offloaded: false,
        owner,
    };
    Ok(Recorded {
        id: row.get(0)?,
        conn,
        opened_us: opened,
        before_recording: flags & flag::BEFORE_RECORDING != 0,
        passive: flags & flag::PASSIVE != 0,
        established_after_us: row.get(4)?,
        closing_after_us: row.get(5)?,
        closed_us: lived.map(|l| opened + l),
        end: End::from_code(row.get(11)?),
        fin_first: if flags & flag::FIN_LOCAL_FIRST != 0 {
            Some(FinFirst::Local)
        } else if flags & flag::FIN_REMOTE_FIRST != 0 {
            Some(FinFirst::Remote)
        } else {
            None
        },
        bytes_sent: row.get::<_, Option<i64>>(12)?.map(|b| b as u64),
        bytes_received: row.get::<_, Option<i64>>(13)?.map(|b| b as u64),
        holders: Vec::new(),
        handed_over: flags & flag::HANDED_OVER != 0,
        stored: true,
    })
}

/// A run heartbeats at least this often; one whose last heartbeat is
/// older and that never stopped is taken to have died there.
pub const HEARTBEAT_STALE_US: i64 = 10_000_000;

/// The gaps between `since` and `until` (unix µs; open ends: the first
/// recording, now).
pub fn gaps(db: &Db, path: &Path, since: Option<i64>, until: Option<i64>) -> Result<Vec<Gap>, HistoryError> {
    let e = sql(path);
    let now = now_us();
    let rows: Vec<(i64, i64, Option<i64>)> = db
        .prepare("SELECT started_us, heartbeat_us, stopped_us FROM runs ORDER BY started_us")
        .map_err(&e)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(&e)?
        .collect::<Result<_, _>>()
        .map_err(&e)?;
    // A run covers up to its stop; one that never stopped, up to its last
    // heartbeat (it was killed), unless it is the last and still beating:
    // then up to now.
    let last = rows.len().saturating_sub(1);
    let mut runs: Vec<(i64, i64)> = rows
        .iter()
        .enumerate()
        .map(|(i, &(start, beat, stop))| {
            let live = i == last && stop.is_none() && now - beat < HEARTBEAT_STALE_US;
            (start, stop.unwrap_or(if live { now } else { beat }))
        })
        .collect();
    let pruned: Option<i64> = db
        .query_row("SELECT value FROM meta WHERE key = 'pruned_before_us'", [], |r| r.get(0))
        .ok();
    if let Some(p) = pruned {
        for r in &mut runs {
            r.0 = r.0.max(p);
        }
        runs.retain(|r| r.0 < r.1);
    }
    let from = since.unwrap_or_else(|| runs.first().map_or(now, |r| r.0));
    let to = until.unwrap_or(now).min(now);
    let mut out = Vec::new();
    let mut at = from;
    for (s, t) in runs {
        if t <= at {
            continue;
        }
        if s > at && at < to {
            out.push(Gap { from_us: at, to_us: s.min(to), kind: GapKind::NotRecording });
        }
        at = at.max(t);
    }
    if at < to {
        out.push(Gap { from_us: at, to_us: to, kind: GapKind::NotRecording });
    }
    let mut st = db.prepare("SELECT at_us, reason, count FROM lost WHERE at_us >= ?1 AND at_us <= ?2 ORDER BY at_us").map_err(&e)?;
    let lost = st
        .query_map([from, to], |r| {
            let at: i64 = r.get(0)?;
            Ok(Gap { from_us: at, to_us: at, kind: GapKind::Lost { reason: r.get(1)?, count: r.get::<_, i64>(2)? as u64 } })
        })
        .map_err(&e)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(&e)?;
    out.extend(lost);
    out.sort_by_key(|g| (g.from_us, g.to_us));
    Ok(out)
}
