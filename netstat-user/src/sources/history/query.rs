//! Reading the store: connection lifetimes in a time range (through the
//! interval index), the table at an instant, and the gaps in the record
//! (time nobody recorded, retention's horizon, lost events).
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

use rusqlite::{Connection as Db, Row, types::Value};

use super::{HistoryError, SPAN_OPEN, addr_from, addr_value, flag, now_us, sql};
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
    /// A PostgreSQL store: only this host's (`--host`).
    pub host: Option<String>,
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

/// A value a query binds, whichever store binds it.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
    /// An address in each form it may be stored in (see `ip_forms`).
    Addr(IpAddr),
}

/// Every form `a` can be stored in: an IPv4 address also as IPv4-mapped
/// IPv6 (an IPv6 socket talking to an IPv4 peer), and the reverse.
pub fn ip_forms(a: IpAddr) -> Vec<IpAddr> {
    match a {
        IpAddr::V4(v4) => vec![a, IpAddr::V6(v4.to_ipv6_mapped())],
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => vec![a, IpAddr::V4(v4)],
            None => vec![a],
        },
    }
}

/// The WHERE terms that select `f` (over the columns and aliases both
/// stores share: `c` the lifetimes, `h`/`k` holder and creator, `p` the
/// place, `s` the source host), `ph(n, arg)` spelling the n-th placeholder.
pub fn conditions(f: &Filter, ph: fn(usize, &Arg) -> String) -> (Vec<String>, Vec<Arg>) {
    let mut wh: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let arg = |args: &mut Vec<Arg>, v: Arg| {
        let p = ph(args.len() + 1, &v);
        args.push(v);
        p
    };
    let forms = |args: &mut Vec<Arg>, a: IpAddr| -> String {
        ip_forms(a).into_iter().map(|v| arg(args, Arg::Addr(v))).collect::<Vec<_>>().join(", ")
    };
    if let Some((a, port)) = f.remote {
        // The remote-address index is the way in.
        wh.push(format!("c.raddr IN ({})", forms(&mut args, a)));
        if let Some(p) = port {
            wh.push(format!("c.rport = {}", arg(&mut args, Arg::Int(p as i64))));
        }
    } else if f.since_us.is_some() || f.until_us.is_some() {
        // One range of the interval index per bucket (`span_of`).
        let since = f.since_us.unwrap_or(i64::MIN / 2);
        let until = f.until_us.unwrap_or(i64::MAX / 2);
        let u = arg(&mut args, Arg::Int(until));
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
            wh.push(format!("c.lport = {}", arg(&mut args, Arg::Int(p as i64))));
        }
    }
    if let Some(p) = f.port {
        let p = arg(&mut args, Arg::Int(p as i64));
        wh.push(format!("(c.lport = {p} OR c.rport = {p})"));
    }
    if let Some(pid) = f.pid {
        let p = arg(&mut args, Arg::Int(pid as i64));
        wh.push(format!("(h.pid = {p} OR k.pid = {p})"));
    }
    if let Some(comm) = &f.comm {
        let c = arg(&mut args, Arg::Bytes(comm.clone()));
        wh.push(format!("(h.comm = {c} OR k.comm = {c})"));
    }
    if let Some(unit) = &f.unit {
        wh.push(format!("p.unit = {}", arg(&mut args, Arg::Text(unit.clone()))));
    }
    if let Some(host) = &f.host {
        wh.push(format!("s.host = {}", arg(&mut args, Arg::Text(host.clone()))));
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
    (wh, args)
}

/// The exact overlap of `f`'s range (the index ranges are a superset).
pub fn keep_in_range(rows: &mut Vec<Recorded>, f: &Filter) {
    rows.retain(|r| {
        let end = if f.listed { r.listed_until_us() } else { r.closed_us };
        f.until_us.is_none_or(|u| r.opened_us <= u) && f.since_us.is_none_or(|s| end.is_none_or(|e| e >= s))
    });
}

/// Lifetimes matching `f`, oldest first.
pub fn lifetimes(db: &Db, path: &Path, f: &Filter) -> Result<Vec<Recorded>, HistoryError> {
    let (wh, args) = conditions(f, |n, _| format!("?{n}"));
    let args: Vec<Value> = args
        .into_iter()
        .flat_map(|a| match a {
            Arg::Int(i) => vec![Value::Integer(i)],
            Arg::Bytes(b) => vec![Value::Blob(b)],
            Arg::Text(t) => vec![Value::Text(t)],
            Arg::Addr(ip) => vec![addr_value(ip)],
        })
        .collect();
    let mut q = SELECT.to_string();
    if !wh.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&wh.join(" AND "));
    }
    q.push_str(" ORDER BY c.opened, c.id");
    let mut rows = run(db, path, &q, &args)?;
    keep_in_range(&mut rows, f);
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
    let mut out: Vec<Recorded> = st.query_map(rusqlite::params_from_iter(args.iter()), |r| decode(r)).map_err(&e)?.collect::<Result<_, _>>().map_err(&e)?;
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

/// A result row, read by column index, whichever store produced it: the
/// two stores' SELECTs list the same columns in the same order.
pub trait Cells {
    type Error;
    fn int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, Self::Error>;
    fn text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn ip(&self, i: usize) -> Result<IpAddr, Self::Error>;
}

impl Cells for Row<'_> {
    type Error = rusqlite::Error;
    fn int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn bytes(&self, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
        Ok(match self.get::<_, Value>(i)? {
            Value::Blob(b) => Some(b),
            Value::Text(t) => Some(t.into_bytes()),
            _ => None,
        })
    }
    fn text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn ip(&self, i: usize) -> rusqlite::Result<IpAddr> {
        Ok(addr_from(&self.get::<_, Value>(i)?))
    }
}

/// A holder from the procs columns starting at `i` (pid, pid_start, comm,
/// exe, uid, parent_pid, parent_comm, ns_pid).
pub fn owner_at<C: Cells>(row: &C, i: usize) -> Result<Option<Owner>, C::Error> {
    let Some(pid) = row.int(i)? else { return Ok(None) };
    let comm = Comm::new(&row.bytes(i + 2)?.unwrap_or_default());
    let mut o = Owner::new(pid as u32, comm, OwnerSource::Captured);
    o.pid_start = row.int(i + 1)?.map(|s| s as u64);
    o.exe = match row.bytes(i + 3)? {
        Some(b) => {
            use std::os::unix::ffi::OsStrExt;
            Some(Arc::from(Path::new(std::ffi::OsStr::from_bytes(&b))))
        }
        None => None,
    };
    if let Some(ppid) = row.int(i + 5)? {
        o.parent = Some(Process { pid: ppid as u32, comm: Comm::new(&row.bytes(i + 6)?.unwrap_or_default()), pid_start: None });
    }
    o.ns_pid = row.int(i + 7)?.map(|n| n as u32);
    Ok(Some(o))
}

/// One lifetime from the columns of `SELECT`.
pub fn decode<C: Cells>(row: &C) -> Result<Recorded, C::Error> {
    let flags = row.int(1)?.unwrap_or(0);
    let ipv6 = flags & flag::IPV6 != 0;
    let opened = row.int(2)?.unwrap_or(0);
    let lived = row.int(3)?;
    let ip = |a: IpAddr| -> IpAddr {
        match (ipv6, a) {
            (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => a,
        }
    };
    let port = |i: usize| -> Result<u16, C::Error> { Ok(row.int(i)?.unwrap_or(0) as u16) };
    let local = SocketAddr::new(ip(row.ip(6)?), port(7)?);
    let remote = SocketAddr::new(ip(row.ip(8)?), port(9)?);
    let uid = row.int(19)?.map(|u| u as u32);
    let mut owner = owner_at(row, 15)?;
    let creator = match row.int(23)? {
        Some(pid) => Some(Process {
            pid: pid as u32,
            pid_start: row.int(24)?.map(|s| s as u64),
            comm: Comm::new(&row.bytes(25)?.unwrap_or_default()),
        }),
        // Not stored when the holder made it.
        None => owner.as_ref().map(|o| Process { pid: o.pid, comm: o.comm, pid_start: o.pid_start }),
    };
    let netns = row.int(26)?.map(|n| n as u32);
    let cgroup_id = row.int(27)?;
    if let Some(o) = owner.as_mut() {
        o.creator = creator;
        if let Some(id) = cgroup_id {
            let text = |i: usize| -> Result<Option<Box<str>>, C::Error> { Ok(row.text(i)?.map(Into::into)) };
            let container = match (text(30)?, text(31)?) {
                (Some(rt), Some(cid)) => Some(Container {
                    runtime: crate::sources::cgroup::runtime_name(&rt),
                    id: cid,
                    name: row.bytes(32)?.map(Into::into),
                    pod: text(33)?,
                }),
                _ => None,
            };
            let path = row.bytes(28)?.map(Into::into);
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
        state: row.int(10)?.map(|s| s as u32),
        id: SockId { netns: netns.unwrap_or(0), cookie: row.int(14)?.unwrap_or(0) as u64 },
        inode: 0,
        uid,
        offloaded: false,
        owner,
    };
    Ok(Recorded {
        id: row.int(0)?.unwrap_or(0),
        conn,
        opened_us: opened,
        before_recording: flags & flag::BEFORE_RECORDING != 0,
        passive: flags & flag::PASSIVE != 0,
        established_after_us: row.int(4)?,
        closing_after_us: row.int(5)?,
        closed_us: lived.map(|l| opened + l),
        end: End::from_code(row.int(11)?.unwrap_or(0)),
        fin_first: if flags & flag::FIN_LOCAL_FIRST != 0 {
            Some(FinFirst::Local)
        } else if flags & flag::FIN_REMOTE_FIRST != 0 {
            Some(FinFirst::Remote)
        } else {
            None
        },
        bytes_sent: row.int(12)?.map(|b| b as u64),
        bytes_received: row.int(13)?.map(|b| b as u64),
        holders: Vec::new(),
        handed_over: flags & flag::HANDED_OVER != 0,
        stored: true,
        host: None,
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
    let pruned: Option<i64> = db
        .query_row("SELECT value FROM meta WHERE key = 'pruned_before_us'", [], |r| r.get(0))
        .ok();
    let (from, to) = (since.unwrap_or(i64::MIN), until.unwrap_or(now));
    let mut st = db.prepare("SELECT at_us, reason, count FROM lost WHERE at_us >= ?1 AND at_us <= ?2 ORDER BY at_us").map_err(&e)?;
    let lost = st
        .query_map([from, to], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64)))
        .map_err(&e)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(&e)?;
    Ok(gaps_of(&rows, pruned, lost, since, until, now))
}

/// The gaps between `since` and `until` given the runs (started,
/// heartbeat, stopped) in start order, retention's horizon and the lost
/// events (at, reason, count) in range.
pub fn gaps_of(rows: &[(i64, i64, Option<i64>)], pruned: Option<i64>, lost: Vec<(i64, String, u64)>, since: Option<i64>, until: Option<i64>, now: i64) -> Vec<Gap> {
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
            out.push(Gap { from_us: at, to_us: s.min(to), kind: GapKind::NotRecording, host: None });
        }
        at = at.max(t);
    }
    if at < to {
        out.push(Gap { from_us: at, to_us: to, kind: GapKind::NotRecording, host: None });
    }
    out.extend(lost.into_iter().filter(|l| l.0 >= from && l.0 <= to).map(|(at, reason, count)| Gap {
        from_us: at,
        to_us: at,
        kind: GapKind::Lost { reason, count },
        host: None,
    }));
    out.sort_by_key(|g| (g.from_us, g.to_us));
    out
}
