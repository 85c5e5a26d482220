//! Loss accounting per connection: of a test's own connections, which
//! expected events were delivered, and whether every missing one is covered
//! by a reported loss from the time that connection ran. Owns no workload:
//! tests hand it their connections (netstat-load's lines) and events.
use serde_json::Value;

use super::{ep, port_of, time_ns, transition};

/// What one `lost` line vouches for: `count` events of `reason` dropped
/// after the previous `lost` line of that reason (netstat read the counter
/// then, and reads it again before printing the next) and before this one.
#[derive(Debug)]
pub struct LossWindow {
    pub reason: String,
    pub count: u64,
    pub from_ns: i128,
    pub to_ns: i128,
}

pub fn windows(events: &[Value]) -> Vec<LossWindow> {
    let mut last: std::collections::HashMap<String, i128> = Default::default();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e["type"] == "lost") {
        let reason = e["reason"].as_str().expect("lost reason").to_string();
        let to_ns = time_ns(e);
        let from_ns = last.insert(reason.clone(), to_ns).unwrap_or(i128::MIN);
        out.push(LossWindow { reason, count: e["count"].as_u64().expect("lost count"), from_ns, to_ns });
    }
    out
}

/// Expected events of one connection that were not delivered, and the time
/// they must have happened in.
#[derive(Debug)]
pub struct Gap {
    pub what: String,
    pub missing: u64,
    pub from_ns: i128,
    pub to_ns: i128,
}

/// Cover every gap with lost events from windows overlapping its time (give
/// or take `slack_ns` for the two clocks), each lost event covering one
/// missing event once. Gaps go in order of their end, each taking from the
/// earliest-ending windows first: for windows that do not overlap (one per
/// reason, and in practice one reason) that finds a cover whenever one exists.
/// Err names the gaps nothing covers.
pub fn cover(mut gaps: Vec<Gap>, windows: &[LossWindow], slack_ns: i128) -> Result<(), String> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by_key(|&i| windows[i].to_ns);
    let mut left: Vec<u64> = windows.iter().map(|w| w.count).collect();
    gaps.sort_by_key(|g| g.to_ns);
    let mut uncovered = Vec::new();
    for g in &gaps {
        let mut need = g.missing;
        for &i in &order {
            let w = &windows[i];
            if need == 0 {
                break;
            }
            if w.to_ns.saturating_add(slack_ns) < g.from_ns || w.from_ns.saturating_sub(slack_ns) > g.to_ns || left[i] == 0 {
                continue;
            }
            let take = need.min(left[i]);
            left[i] -= take;
            need -= take;
        }
        if need > 0 {
            uncovered.push(format!("{} ({} of {} missing events not covered)", g.what, need, g.missing));
        }
    }
    if uncovered.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = uncovered.iter().take(15).cloned().collect();
    Err(format!(
        "{} of {} incomplete connections have events that were neither delivered nor reported lost while they ran:\n  {}\nloss reports: {:?}",
        uncovered.len(),
        gaps.len(),
        shown.join("\n  "),
        windows.iter().take(30).collect::<Vec<_>>()
    ))
}

/// What each end of a `pair` connection goes through when the client
/// closes first; CLIENT[0] (CLOSED->SYN_SENT) happens before the port is
/// chosen, so its event carries local port 0.
pub const CLIENT: [&str; 5] =
    ["CLOSED->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT_1", "FIN_WAIT_1->FIN_WAIT_2", "FIN_WAIT_2->CLOSED"];
pub const SERVER: [&str; 5] =
    ["LISTENING->SYN_RECEIVED", "SYN_RECEIVED->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSED"];
/// Ten transitions and the accept.
pub const PER_CONNECTION: u64 = 11;

/// One connection of `netstat-load pair --timestamps`, by its client end.
#[derive(Debug)]
pub struct PairConn {
    pub local: String,
    pub remote: String,
    /// Before the client's connect.
    pub opened_ns: i128,
    /// After the client's close.
    pub client_closed_ns: i128,
    /// After the later of the two closes: every event of the connection
    /// happens in a syscall of one end between the two (or in the softirq
    /// that syscall runs on loopback).
    pub closed_ns: i128,
    /// The client's socket cookie, with `pair --cookies`: what names its
    /// CLOSED->SYN_SENT, which has no local port yet.
    pub cookie: Option<u64>,
}

/// The connections of a `pair --timestamps` run (client and server lines joined).
pub fn pair_conns(out: &[Value]) -> Vec<PairConn> {
    let ns = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} (pair without --timestamps?): {v}")) as i128;
    out.iter()
        .filter(|v| v.get("conn").is_some())
        .map(|c| {
            let (local, remote) = (ep(&c["local"]), ep(&c["remote"]));
            let server = out
                .iter()
                .find(|s| s.get("accepted").is_some() && ep(&s["remote"]) == local && ep(&s["local"]) == remote)
                .unwrap_or_else(|| panic!("the server reported no close of {local} -> {remote}"));
            PairConn {
                opened_ns: ns(c, "opened_ns"),
                client_closed_ns: ns(c, "closed_ns"),
                closed_ns: ns(c, "closed_ns").max(ns(server, "closed_ns")),
                cookie: c["cookie"].as_u64(),
                local,
                remote,
            }
        })
        .collect()
}

/// Per-connection accounting of a client-closes-first `pair`'s events.
pub struct PairAccount {
    /// Expected events delivered, over all connections.
    pub delivered: u64,
    pub gaps: Vec<Gap>,
    /// Events of the namespace that are neither a connection's expected
    /// event nor its listener's, or an expected event seen twice.
    pub unexplained: Vec<String>,
    /// Server-side sockets the kernel made and destroyed beside a
    /// connection's real child (see `duplicate_children`): their events.
    pub duplicate_children: Vec<String>,
}

/// Cookies of server-side sockets that were a second child of one
/// handshake: two CPUs completed the same request at once (the client's
/// ACK and its first data, say), each cloned a child, and the one that lost
/// the race to hash itself was closed at once (`inet_ehash_nolisten`:
/// SYN_RECV -> CLOSE, never accepted, never in `ss`). The kernel really
/// made that socket, so its events are reported; they are told apart by
/// their cookie: only LISTENING->SYN_RECEIVED and SYN_RECEIVED->CLOSED,
/// the latter always, on a tuple of `server_tuples`, and no accept.
fn duplicate_children(events: &[Value], server_tuples: &std::collections::HashSet<(String, String)>) -> std::collections::HashSet<u64> {
    use std::collections::HashMap;
    let mut by_cookie: HashMap<u64, (bool, bool)> = HashMap::new(); // (closed from SYN_RECEIVED, anything else)
    for e in events.iter().filter(|e| e["type"] != "lost") {
        let Some(cookie) = e["cookie"].as_u64() else { continue };
        if !server_tuples.contains(&(ep(&e["local"]), ep(&e["remote"]))) {
            continue;
        }
        let t = if e["type"] == "tcp_accept" { "accept".to_string() } else { transition(e) };
        let g = by_cookie.entry(cookie).or_default();
        match t.as_str() {
            "SYN_RECEIVED->CLOSED" => g.0 = true,
            "LISTENING->SYN_RECEIVED" => {}
            _ => g.1 = true,
        }
    }
    by_cookie.into_iter().filter(|(_, (closed, other))| *closed && !*other).map(|(c, _)| c).collect()
}

/// `events` must be only the test's own (its namespace's): each is matched
/// to the connection whose 4-tuple it carries (CLOSED->SYN_SENT, which has
/// no local port yet, to the one connecting at that time).
pub fn account_pair(conns: &[PairConn], events: &[Value]) -> PairAccount {
    let mut seen = vec![[0u32; PER_CONNECTION as usize]; conns.len()];
    let mut unexplained = Vec::new();
    // A client port may come back for a later connection (the 4-tuple is
    // no identity): a tuple names every connection that had it, and an event
    // goes to the one that was open at its time.
    let mut by_tuple: std::collections::HashMap<(String, String), Vec<usize>> = std::collections::HashMap::new();
    for (i, c) in conns.iter().enumerate() {
        by_tuple.entry((c.local.clone(), c.remote.clone())).or_default().push(i);
    }
    let pick = |ix: &Vec<usize>, at: i128| -> usize {
        *ix.iter().find(|&&i| conns[i].opened_ns <= at && at <= conns[i].closed_ns).unwrap_or(&ix[0])
    };
    let listeners: std::collections::HashSet<&str> = conns.iter().map(|c| c.remote.as_str()).collect();
    let server_tuples = conns.iter().map(|c| (c.remote.clone(), c.local.clone())).collect();
    let duplicates = duplicate_children(events, &server_tuples);
    let mut duplicate_children = Vec::new();
    for e in events.iter().filter(|e| e["type"] != "lost") {
        if e["cookie"].as_u64().is_some_and(|c| duplicates.contains(&c)) {
            duplicate_children.push(e.to_string());
            continue;
        }
        let (l, r) = (ep(&e["local"]), ep(&e["remote"]));
        let t = transition(e);
        let at = time_ns(e);
        let slot = if let Some(ix) = by_tuple.get(&(l.clone(), r.clone())) {
            let i = pick(ix, at);
            CLIENT.iter().position(|x| *x == t).filter(|&k| k > 0).map(|k| (i, k))
        } else if let Some(ix) = by_tuple.get(&(r.clone(), l.clone())) {
            let i = pick(ix, at);
            if e["type"] == "tcp_accept" {
                Some((i, 10))
            } else {
                SERVER.iter().position(|x| *x == t).map(|k| (i, 5 + k))
            }
        } else if t == CLIENT[0] && port_of(&l) == 0 && listeners.contains(r.as_str()) {
            let by_cookie = e["cookie"].as_u64().and_then(|k| conns.iter().position(|c| c.cookie == Some(k)));
            by_cookie
                .or_else(|| conns.iter().position(|c| c.remote == r && c.opened_ns <= at && at <= c.client_closed_ns))
                .map(|i| (i, 0))
        } else if listeners.contains(l.as_str()) && port_of(&r) == 0 {
            continue; // the listener's own LISTENING and CLOSED
        } else {
            None
        };
        match slot {
            Some((i, k)) if seen[i][k] == 0 => seen[i][k] = 1,
            Some(_) => unexplained.push(format!("seen twice: {e}")),
            None => unexplained.push(e.to_string()),
        }
    }
    let mut delivered = 0;
    let mut gaps = Vec::new();
    for (c, s) in conns.iter().zip(&seen) {
        let n: u64 = s.iter().map(|&x| x as u64).sum();
        delivered += n;
        if n < PER_CONNECTION {
            let names: Vec<&str> = CLIENT.iter().chain(SERVER.iter()).copied().chain(["accept"]).collect();
            let missing: Vec<&str> = s.iter().zip(&names).filter(|(x, _)| **x == 0).map(|(_, n)| *n).collect();
            gaps.push(Gap {
                what: format!("{} -> {} missing {missing:?}", c.local, c.remote),
                missing: PER_CONNECTION - n,
                from_ns: c.opened_ns,
                to_ns: c.closed_ns,
            });
        }
    }
    if !duplicate_children.is_empty() {
        eprintln!("second children of one handshake, made and closed by the kernel: {duplicate_children:#?}");
    }
    PairAccount { delivered, gaps, unexplained, duplicate_children }
}

/// Per-connection accounting of a `churn` run. Churn names no connection
/// and either end may close first (or both at once), so connections are
/// found in `events` (the test's namespace's only): grouped by 4-tuple, both
/// ends together, each end's transitions placed by their old state (the
/// server end is the one on a `listeners` address), a group holding as many
/// connections as its most repeated place (a port may come back within a
/// run). Each connection has 11 events, as a `pair` one. A connection's
/// missing events happened after its connect and before the run ended (the
/// accept thread may accept and close it long after the client is done):
/// the connect is dated by the earliest of its handshake events that
/// arrived (client SYN_SENT->ESTABLISHED, server LISTENING->SYN_RECEIVED and
/// SYN_RECEIVED->ESTABLISHED, all within the client's connect; `slack_ns`
/// before it), or is anywhere in `run` when none did. CLOSED->SYN_SENT,
/// which has no local port yet, and connections of which nothing arrived
/// are pooled: `made` of each were expected, anywhere in `run`.
pub fn account_churn(made: u64, listeners: &[String], events: &[Value], run: (i128, i128), slack_ns: i128) -> PairAccount {
    use std::collections::HashMap;
    let step = |old: &str| match old {
        "LISTENING" => Some(0),
        "SYN_SENT" | "SYN_RECEIVED" => Some(1),
        "ESTABLISHED" => Some(2),
        "CLOSE_WAIT" | "FIN_WAIT_1" => Some(3),
        "LAST_ACK" | "FIN_WAIT_2" | "CLOSING" => Some(4),
        _ => None,
    };
    let mut groups: HashMap<(String, String), (Vec<u32>, Option<i128>)> = HashMap::new();
    let mut unexplained = Vec::new();
    let mut syn_sent = 0u64;
    for e in events.iter().filter(|e| e["type"] != "lost") {
        let (l, r) = (ep(&e["local"]), ep(&e["remote"]));
        let t = transition(e);
        if port_of(&l) == 0 || port_of(&r) == 0 {
            if t == CLIENT[0] && port_of(&l) == 0 {
                syn_sent += 1;
            } else if !(port_of(&r) == 0 && (t == "CLOSED->LISTENING" || t == "LISTENING->CLOSED")) {
                unexplained.push(e.to_string());
            }
            continue;
        }
        let server = listeners.contains(&l);
        // Places: the client end's steps 1-4, the server end's 0-4 (5-9), the accept (10).
        let slot = if e["type"] == "tcp_accept" {
            Some(10).filter(|_| server)
        } else {
            match (server, e["old_state"].as_str().and_then(step)) {
                (true, Some(k)) => Some(5 + k),
                (false, Some(k)) if k > 0 => Some(k),
                _ => None,
            }
        };
        let Some(slot) = slot else {
            unexplained.push(e.to_string());
            continue;
        };
        let key = if server { (r, l) } else { (l, r) };
        let g = groups.entry(key).or_insert_with(|| (vec![0; PER_CONNECTION as usize], None));
        g.0[slot] += 1;
        if [1, 5, 6].contains(&slot) {
            g.1 = Some(g.1.map_or(time_ns(e), |t| t.min(time_ns(e))));
        }
    }
    let mut delivered = syn_sent;
    let mut connections = 0u64;
    let mut gaps = Vec::new();
    for ((a, b), (slots, connect)) in &groups {
        let n = *slots.iter().max().unwrap() as u64;
        let got: u64 = slots.iter().map(|&x| x as u64).sum();
        connections += n;
        delivered += got;
        if got < n * (PER_CONNECTION - 1) {
            gaps.push(Gap {
                what: format!("{a} -> {b}: {n} connection(s), events per place {:?}", &slots[1..]),
                missing: n * (PER_CONNECTION - 1) - got,
                // A port that came back: the first connection's handshake dates neither.
                from_ns: connect.filter(|_| n == 1).map_or(run.0, |t| t - slack_ns),
                to_ns: run.1,
            });
        }
    }
    if connections > made || syn_sent > made {
        unexplained.push(format!("{connections} connections ({syn_sent} connects) in the events, churn made {made}"));
    }
    let pooled = made.saturating_sub(syn_sent) + made.saturating_sub(connections) * (PER_CONNECTION - 1);
    if pooled > 0 {
        gaps.push(Gap {
            what: format!(
                "{} connects and {} whole connections of which nothing arrived",
                made.saturating_sub(syn_sent),
                made.saturating_sub(connections)
            ),
            missing: pooled,
            from_ns: run.0,
            to_ns: run.1,
        });
    }
    PairAccount { delivered, gaps, unexplained, duplicate_children: Vec::new() }
}
