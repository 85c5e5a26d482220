//! A real PostgreSQL server (issue 12, ownership follows the socket): the
//! postmaster accepts every connection and forks a backend that holds it
//! from then on, so every server-side close, and every row of an open
//! session, must name the backend, never the postmaster. One exception,
//! with the kernel's word for it: the postmaster closes its own copy of
//! the socket just after fork(), and a session short enough (pgbench -C on
//! a loaded machine) can end before that; the postmaster then lets go
//! last, and ftrace shows it as the task that made the change.
//! vm: host only (needs tools the guest has not)
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use support::{ftrace::StateTrace, postgres::Postgres, *};

fn local_port(e: &Value) -> Option<u64> {
    e["local"]["port"].as_u64()
}

/// A transition the server makes by calling close()/shutdown() (in the
/// backend, when it exits): the kernel does it in the caller's syscall.
fn is_server_close(e: &Value) -> bool {
    match e["new_state"].as_str() {
        Some("FIN_WAIT_1" | "LAST_ACK") => true,
        Some("CLOSED") => matches!(e["old_state"].as_str(), Some("ESTABLISHED" | "CLOSE_WAIT")),
        _ => false,
    }
}

#[test]
fn stream_names_the_backend_on_every_server_side_close() {
    let pg = Postgres::start();
    pg.pgbench_init();
    let stream = Stream::start(&[]);
    let witness = StateTrace::start(pg.port);
    // -C: a new connection (so a new backend) per transaction.
    let bench = pg.pgbench(&["-C", "-c", "4", "-j", "2", "-T", "3", "-S", "-n"]);
    // Every server end ends in CLOSED; wait for the stream to catch up.
    let port = pg.port as u64;
    let closed = |ev: &[Value]| ev.iter().filter(|e| local_port(e) == Some(port) && e["new_state"] == "CLOSED").count();
    stream.wait_for(Duration::from_secs(5), |ev| closed(ev) as u64 >= bench.transactions);
    let events = stream.stop();
    // The kernel's current task for each change, by (client port, old, new).
    let mut kernel: HashMap<(u64, String, String), Vec<u64>> = HashMap::new();
    for c in witness.stop() {
        kernel.entry((c.dport as u64, c.old, c.new)).or_default().push(c.tid as u64);
    }

    let server: Vec<&Value> = events.iter().filter(|e| e["type"] == "tcp_state" && local_port(e) == Some(port)).collect();
    let closes: Vec<&Value> = server.iter().copied().filter(|e| is_server_close(e)).collect();
    let postmaster = pg.postmaster_pid;
    let mut by_transition: BTreeMap<String, usize> = BTreeMap::new();
    for e in &closes {
        *by_transition.entry(transition(e)).or_default() += 1;
    }
    // FIN_WAIT_1 and LAST_ACK are made only in the closing task's syscall.
    let by_syscall = |e: &Value| matches!(e["new_state"].as_str(), Some("FIN_WAIT_1" | "LAST_ACK"));
    let named_postmaster = closes.iter().filter(|e| by_syscall(e) && e["pid"] == postmaster).count();
    let fin_or_last_ack = closes.iter().filter(|e| by_syscall(e)).count();
    let with_creator = closes.iter().filter(|e| e.get("creator_pid").is_some()).count();
    // The tasks ftrace saw make this change.
    let made_by = |e: &Value| -> Option<&Vec<u64>> {
        let key = (e["remote"]["port"].as_u64()?, e["old_state"].as_str()?.to_string(), e["new_state"].as_str()?.to_string());
        kernel.get(&key)
    };
    // The postmaster let go last: the kernel made the close in its syscall.
    let postmaster_made = |e: &Value| by_syscall(e) && made_by(e).is_some_and(|t| t.contains(&(postmaster as u64)));
    let postmaster_last = closes.iter().filter(|e| e["pid"] == postmaster && postmaster_made(e)).count();
    let summary = format!(
        "pgbench made {} connections; {} tcp_state events on server port {port}, {} server-side closes {by_transition:?}; \
         {named_postmaster} of {fin_or_last_ack} FIN_WAIT_1/LAST_ACK name the postmaster {postmaster} \
         ({postmaster_last} of them made by the postmaster as ftrace saw it: it let go last); {with_creator} carry creator_pid; \
         ftrace recorded {} changes on the port",
        bench.transactions,
        server.len(),
        closes.len(),
        kernel.values().map(Vec::len).sum::<usize>()
    );
    assert!(
        closes.len() >= 50,
        "{summary}\nexpected at least 50 server-side closes; events on the port:\n{}",
        closest(&events, &format!("127.0.0.1:{port}"))
    );

    let offences: Vec<String> = closes
        .iter()
        .filter_map(|e| {
            let mut why = Vec::new();
            if by_syscall(e) {
                match made_by(e) {
                    None => why.push("ftrace saw no such change".to_string()),
                    Some(t) if !t.iter().any(|t| e["tid"] == *t) => why.push(format!("tid {} but ftrace's task was {t:?}", e["tid"])),
                    Some(_) => {}
                }
            }
            if e["pid"] == postmaster && !postmaster_made(e) {
                why.push("pid is the postmaster".to_string());
            } else if e["pid"].is_null() {
                why.push("no pid".to_string());
            }
            if e["comm"] != "postgres" {
                why.push(format!("comm {}", e["comm"]));
            }
            match e.get("creator_pid") {
                None => why.push("no creator_pid".to_string()),
                Some(c) if *c != postmaster => why.push(format!("creator_pid {c} is not the postmaster")),
                Some(_) => {}
            }
            (!why.is_empty()).then(|| format!("{}: {e}", why.join(", ")))
        })
        .collect();
    assert!(
        offences.is_empty(),
        "{summary}\n{} of {} server-side closes do not name the holder (a backend, pid != postmaster {postmaster}, unless \
         ftrace shows the postmaster made the change; the task ftrace saw; comm postgres; creator_pid the postmaster); the first:\n{}",
        offences.len(),
        closes.len(),
        offences.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!("{summary}");
}

/// The pids `ss -tanp` lists for each ESTABLISHED socket on `port`, by
/// (local, remote) as `ADDR:PORT`.
fn ss_users(port: u16) -> HashMap<(String, String), Vec<u32>> {
    support::ss::sockets()
        .into_iter()
        .filter(|s| s.proto == "tcp" && s.state == "ESTAB" && port_of(&s.local) == port)
        .map(|s| ((s.local.clone(), s.peer.clone()), s.users.iter().map(|u| u.1 as u32).collect()))
        .collect()
}

/// Problems of `rows` (connections of one netstat document) against ss and
/// the held sessions: (server-port ESTABLISHED rows seen, problems).
fn disagreements(
    rows: &[Value],
    ss: &HashMap<(String, String), Vec<u32>>,
    pg: &Postgres,
    sessions: &[support::postgres::Session],
) -> (usize, Vec<String>) {
    let port = pg.port as u64;
    let ours: Vec<&Value> =
        rows.iter().filter(|c| c["proto"] == "tcp" && local_port(c) == Some(port) && c["state"] == "ESTABLISHED").collect();
    let mut problems = Vec::new();
    for s in sessions {
        if !ours.iter().any(|c| c["remote"]["port"] == s.client_port) {
            problems.push(format!("session of backend {} (client port {}) not listed", s.backend_pid, s.client_port));
        }
    }
    for c in &ours {
        let key = (ep(&c["local"]), ep(&c["remote"]));
        let pid = c["pid"].as_u64().map(|p| p as u32);
        match ss.get(&key) {
            None => problems.push(format!("not an ESTABLISHED socket in ss: {c}")),
            Some(users) if pid.is_none_or(|p| !users.contains(&p)) => {
                let who = if pid == Some(pg.postmaster_pid) { " (the postmaster)" } else { "" };
                problems.push(format!(
                    "pid {}{who} with owner_source {} but ss lists {users:?} for {} -> {}",
                    c["pid"], c["owner_source"], key.0, key.1
                ))
            }
            Some(_) if pid == Some(pg.postmaster_pid) => problems.push(format!("names the postmaster: {c}")),
            Some(_) => {}
        }
    }
    (ours.len(), problems)
}

fn report(what: &str, (n, problems): &(usize, Vec<String>)) -> String {
    if problems.is_empty() {
        format!("{what}: {n} rows agree with ss")
    } else {
        format!("{what}: {} problems in {n} rows:\n  {}", problems.len(), problems.iter().take(12).cloned().collect::<Vec<_>>().join("\n  "))
    }
}


#[test]
fn live_table_matches_ss_for_held_backends() {
    const SESSIONS: usize = 10;
    let pg = Postgres::start();
    let table = Lines::spawn({
        let mut c = Command::new(netstat_bin());
        c.args(["-ano", "1", "--json"]);
        c
    });
    assert!(table.wait_for(Duration::from_secs(60), |l| !displays(l).is_empty()), "no first display from netstat -ano 1 --json");
    let sessions = pg.hold(SESSIONS);
    // Two more displays: the last one began after every session connected.
    let n = displays(&table.lines()).len();
    assert!(table.wait_for(Duration::from_secs(10), |l| displays(l).len() >= n + 2), "displays stopped");
    let ss = ss_users(pg.port);
    let shown = displays(&table.lines());
    let last = shown.last().unwrap();
    schema::check(last, "live_document");
    let once = Command::new(netstat_bin()).args(["-ano", "--json"]).output().expect("run netstat -ano --json");
    assert!(once.status.success(), "netstat -ano --json: {}", String::from_utf8_lossy(&once.stderr));
    let once: Value = serde_json::from_slice(&once.stdout).expect("netstat -ano --json prints JSON");
    schema::check(&once, "connections_document");

    // The harness's own ground truth: each session's server end is held by
    // exactly the backend the server named (pg_backend_pid()).
    for s in &sessions {
        let key = (format!("127.0.0.1:{}", pg.port), format!("127.0.0.1:{}", s.client_port));
        assert_eq!(ss.get(&key), Some(&vec![s.backend_pid]), "ss -tanp on session {key:?}; all: {ss:?}");
    }
    let live = disagreements(last["connections"].as_array().unwrap(), &ss, &pg, &sessions);
    let one_shot = disagreements(once["connections"].as_array().unwrap(), &ss, &pg, &sessions);
    for s in sessions {
        s.close();
    }
    unsafe { libc::kill(table.child.id() as i32, libc::SIGINT) };
    drop(table.stop());
    let summary = format!(
        "{SESSIONS} sessions, postmaster {}, backends {:?}\n{}\n{}",
        pg.postmaster_pid,
        ss.values().flatten().collect::<Vec<_>>(),
        report("live table (netstat -ano 1 --json, last display)", &live),
        report("one-shot (netstat -ano --json)", &one_shot)
    );
    assert!(live.1.is_empty() && one_shot.1.is_empty(), "{summary}");
    eprintln!("{summary}");
}
