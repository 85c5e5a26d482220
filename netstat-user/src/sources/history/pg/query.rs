//! The history's queries over the fleet store: the same filters and the
//! same lifetimes as the local store (`history::query`), across every host
//! or for one (`Filter::host`), each lifetime and gap naming its host.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use postgres::{Client, Row, types::{ToSql, Type}};

use super::Target;
use crate::sources::history::{
    HistoryError, now_us,
    query::{Arg, Cells, Filter, Gap, conditions, decode, gaps_of, keep_in_range, owner_at},
};
use crate::model::{Comm, Owner, OwnerSource, history::Recorded};

impl Cells for Row {
    type Error = postgres::Error;
    fn int(&self, i: usize) -> Result<Option<i64>, postgres::Error> {
        Ok(match *self.columns()[i].type_() {
            Type::INT2 => self.try_get::<_, Option<i16>>(i)?.map(i64::from),
            Type::INT4 => self.try_get::<_, Option<i32>>(i)?.map(i64::from),
            _ => self.try_get::<_, Option<i64>>(i)?,
        })
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, postgres::Error> {
        Ok(match *self.columns()[i].type_() {
            Type::TEXT => self.try_get::<_, Option<String>>(i)?.map(String::into_bytes),
            _ => self.try_get(i)?,
        })
    }
    fn text(&self, i: usize) -> Result<Option<String>, postgres::Error> {
        self.try_get(i)
    }
    fn ip(&self, i: usize) -> Result<IpAddr, postgres::Error> {
        Ok(self.try_get::<_, Option<IpAddr>>(i)?.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
    }
}

/// The local store's SELECT, column for column, then the host (34) and
/// the source (35).
const SELECT: &str = r#"SELECT c.id, c.flags, c.opened, c.lived, c.estab, c.closing, c.laddr, c.lport, c.raddr, c.rport, c.state, c."end",
    c.sent, c.recv, c.cookie,
    h.pid, h.pid_start, h.comm, h.exe, h.uid, h.parent_pid, h.parent_comm, h.ns_pid,
    k.pid, k.pid_start, k.comm,
    p.netns, p.cgroup_id, p.cgroup, p.unit, p.runtime, p.container, p.container_name, p.pod,
    s.host, c.src
  FROM netstat.conns c JOIN netstat.sources s ON s.id = c.src
  LEFT JOIN netstat.procs h ON h.src = c.src AND h.id = c.holder
  LEFT JOIN netstat.procs k ON k.src = c.src AND k.id = c.creator
  LEFT JOIN netstat.places p ON p.src = c.src AND p.id = c.place"#;

/// A placeholder with its type spelt out: PostgreSQL then compares it
/// with any integer column, and binds our i64 to it.
fn placeholder(n: usize, a: &Arg) -> String {
    match a {
        Arg::Int(_) => format!("${n}::int8"),
        Arg::Bytes(_) => format!("${n}::bytea"),
        Arg::Text(_) => format!("${n}::text"),
        Arg::Addr(_) => format!("${n}::inet"),
    }
}

/// Lifetimes matching `f`, oldest first (then by host).
pub fn lifetimes(c: &mut Client, t: &Target, f: &Filter) -> Result<Vec<Recorded>, HistoryError> {
    let (wh, args) = conditions(f, placeholder);
    let mut q = SELECT.to_string();
    if !wh.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&wh.join(" AND "));
    }
    q.push_str(" ORDER BY c.opened, s.host, c.id");
    let binds: Vec<Box<dyn ToSql + Sync>> = args
        .into_iter()
        .map(|a| -> Box<dyn ToSql + Sync> {
            match a {
                Arg::Int(i) => Box::new(i),
                Arg::Bytes(b) => Box::new(b),
                Arg::Text(s) => Box::new(s),
                Arg::Addr(ip) => Box::new(ip),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b.as_ref()).collect();
    let found = c.query(q.as_str(), &refs).map_err(|e| t.error(e))?;
    let mut hosts: BTreeMap<String, Arc<str>> = BTreeMap::new();
    let mut out = Vec::with_capacity(found.len());
    let mut handed = Vec::new();
    for row in &found {
        let mut r = decode(row).map_err(|e| t.error(e))?;
        let host: String = row.get(34);
        r.host = Some(hosts.entry(host.clone()).or_insert_with(|| Arc::from(host.as_str())).clone());
        if r.handed_over {
            handed.push((out.len(), row.get::<_, i32>(35)));
        }
        out.push(r);
    }
    if !handed.is_empty() {
        let st = c
            .prepare(
                "SELECT h.since, p.pid, p.pid_start, p.comm, p.exe, p.uid, p.parent_pid, p.parent_comm, p.ns_pid
                 FROM netstat.holders h LEFT JOIN netstat.procs p ON p.src = h.src AND p.id = h.proc WHERE h.src = $1 AND h.conn = $2 ORDER BY h.since",
            )
            .map_err(|e| t.error(e))?;
        for (i, src) in handed {
            let id = out[i].id;
            let cg = out[i].conn.owner.as_ref().and_then(|o| o.cgroup.clone());
            let mut holders = Vec::new();
            for row in c.query(&st, &[&src, &id]).map_err(|e| t.error(e))? {
                let mut o = owner_at(&row, 1).map_err(|e| t.error(e))?.unwrap_or_else(|| Owner::new(0, Comm::default(), OwnerSource::Captured));
                o.cgroup = cg.clone();
                holders.push((row.get::<_, i64>(0), o));
            }
            out[i].holders = holders;
        }
    }
    keep_in_range(&mut out, f);
    Ok(out)
}

/// One host's table as netstat would have listed it at unix µs `t`.
pub fn table_at(c: &mut Client, target: &Target, t: i64, f: &Filter) -> Result<Vec<Recorded>, HistoryError> {
    let f = Filter { since_us: Some(t), until_us: Some(t), listed: true, ..f.clone() };
    let mut rows = lifetimes(c, target, &f)?;
    rows.retain(|r| r.listed_at(t));
    Ok(rows)
}

/// The gaps of each host's record (or `host`'s) between `since` and
/// `until`.
pub fn gaps(c: &mut Client, t: &Target, host: Option<&str>, since: Option<i64>, until: Option<i64>) -> Result<Vec<Gap>, HistoryError> {
    let now = now_us();
    let e = |e| t.error(e);
    let runs = c
        .query(
            "SELECT s.host, r.started_us, r.heartbeat_us, r.stopped_us FROM netstat.runs r JOIN netstat.sources s ON s.id = r.src
             WHERE $1::text IS NULL OR s.host = $1 ORDER BY s.host, r.started_us",
            &[&host],
        )
        .map_err(e)?;
    let lost = c
        .query(
            "SELECT s.host, l.at_us, l.reason, l.count FROM netstat.lost l JOIN netstat.sources s ON s.id = l.src
             WHERE ($1::text IS NULL OR s.host = $1) AND l.at_us >= $2 AND l.at_us <= $3 ORDER BY l.at_us",
            &[&host, &since.unwrap_or(i64::MIN), &until.unwrap_or(now)],
        )
        .map_err(e)?;
    let pruned: Option<i64> =
        c.query_opt("SELECT value FROM netstat.meta WHERE key = 'pruned_before_us'", &[]).map_err(e)?.map(|r| r.get(0));
    let mut by_host: BTreeMap<String, (Vec<(i64, i64, Option<i64>)>, Vec<(i64, String, u64)>)> = BTreeMap::new();
    if let Some(h) = host {
        by_host.entry(h.to_string()).or_default();
    }
    for r in &runs {
        by_host.entry(r.get(0)).or_default().0.push((r.get(1), r.get(2), r.get(3)));
    }
    for l in &lost {
        by_host.entry(l.get(0)).or_default().1.push((l.get(1), l.get(2), l.get::<_, i64>(3) as u64));
    }
    let mut out = Vec::new();
    for (h, (runs, lost)) in by_host {
        let name: Arc<str> = Arc::from(h.as_str());
        out.extend(gaps_of(&runs, pruned, lost, since, until, now).into_iter().map(|mut g| {
            g.host = Some(name.clone());
            g
        }));
    }
    out.sort_by(|a, b| (a.from_us, a.to_us, &a.host).cmp(&(b.from_us, b.to_us, &b.host)));
    Ok(out)
}
