//! History (issue 16): `netstat --record` while named processes open and
//! close connections and exit, then `--history` and `--at` against what
//! the processes themselves reported (their PIDs, addresses and the wall
//! clock around each connect and close). A SIGKILL mid-burst must leave a
//! database SQLite itself finds intact (python3's sqlite3 runs
//! `PRAGMA integrity_check`), with the gap reported; retention prunes; a
//! reader that cannot write the directory queries a live database.
//! vm: host only (its witnesses, python3's sqlite3 and date, are not in the guests; the reset hooks it relies on attach in every guest run, see probe_plan)
mod support;

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{history::*, *};

/// One pair scene's view of itself: the server's and client's PIDs, the
/// connection's two ends, and the wall clock around it.
struct Scene {
    server_pid: u32,
    client_pid: u32,
    server_name: String,
    client_name: String,
    /// Client's (local, remote) per connection, with opened/closed ns.
    conns: Vec<(String, String, i128, i128)>,
}

fn pair(tag: &str, extra: &[&str]) -> Scene {
    let (server_name, client_name) = (name(&format!("{tag}s")), name(&format!("{tag}c")));
    let mut args = vec!["pair", "--server-name", &server_name, "--client-name", &client_name, "--addr", "127.0.0.1", "--timestamps"];
    args.extend_from_slice(extra);
    let lines = load(&args);
    let role = |r: &str| lines.iter().find(|l| l["role"] == r).and_then(|l| l["pid"].as_u64()).unwrap_or_else(|| panic!("no {r} line: {lines:?}")) as u32;
    let conns = lines
        .iter()
        .filter(|l| l.get("conn").is_some())
        .map(|l| {
            (
                l["local"].as_str().unwrap().to_string(),
                l["remote"].as_str().unwrap().to_string(),
                l["opened_ns"].as_i64().unwrap() as i128,
                l["closed_ns"].as_i64().unwrap() as i128,
            )
        })
        .collect();
    Scene { server_pid: role("server"), client_pid: role("client"), server_name, client_name, conns }
}

fn rows_with<'a>(doc: &'a Value, local: &str, remote: &str) -> Vec<&'a Value> {
    doc["connections"].as_array().unwrap().iter().filter(|r| ep(&r["local"]) == local && ep(&r["remote"]) == remote).collect()
}

fn one<'a>(doc: &'a Value, local: &str, remote: &str) -> &'a Value {
    let rows = rows_with(doc, local, remote);
    assert_eq!(rows.len(), 1, "expected one lifetime {local} -> {remote}, got {rows:#?}\nall: {doc:#}");
    rows[0]
}

/// RFC 3339 with nanoseconds, UTC, for a unix ns instant.
fn rfc3339(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let out = Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%S"]).output().unwrap();
    format!("{}.{:09}Z", String::from_utf8_lossy(&out.stdout).trim(), ns.rem_euclid(1_000_000_000))
}

#[test]
fn history_names_processes_end_states_and_close_causes() {
    let dir = Dir::new("causes");
    causes(&Store::sqlite(&dir));
}

#[test]
fn fleet_history_names_processes_end_states_and_close_causes() {
    let pg = support::postgres::Postgres::start();
    let dir = Dir::new("fcauses");
    causes(&Store::pg(&pg, &dir, "causes-host"));
}

/// The maximum-churn test runs alone: beside it the kernel resets orphaned
/// sockets (tcp_max_orphans), and the scenes' FIN closes become RSTs.
static CHURN: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by the maximum-churn test after its lock: when it ends, however it
/// ends, its 60 s of TIME_WAIT sockets go before the other tests run. A full
/// TIME_WAIT table (tcp_max_tw_buckets) made the kernel skip the next
/// scene's timewait socket, so the peer's FIN met no socket and drew an RST
/// (a fresh-clone run: `fin_remote` recorded as `rst_received`).
struct TimeWaitGone;

impl Drop for TimeWaitGone {
    fn drop(&mut self) {
        let count = || {
            std::process::Command::new("ss")
                .args(["-Htan", "state", "time-wait"])
                .output()
                .map(|o| o.stdout.iter().filter(|&&b| b == b'\n').count())
                .unwrap_or(0)
        };
        // sock_diag destroys timewait sockets on the kernels that can;
        // elsewhere they expire within 60 s.
        let _ = std::process::Command::new("ss").args(["-K", "state", "time-wait"]).output();
        let deadline = std::time::Instant::now() + Duration::from_secs(70);
        while count() > 1000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn beside_churn() -> std::sync::RwLockReadGuard<'static, ()> {
    CHURN.read().unwrap_or_else(|e| e.into_inner())
}

fn causes(store: &Store) {
    let _alone = beside_churn();
    let rec = Recorder::start(store, &[]);
    let fin_client = pair("fc", &["--count", "1"]);
    let fin_server = pair("fs", &["--count", "1", "--server-close-first"]);
    let rst_client = pair("rc", &["--count", "1", "--rst"]);
    let rst_server = pair("rs", &["--count", "1", "--rst", "--server-close-first"]);
    // A refused connect: nothing listens on the port netstat-load's own
    // listener had (it has exited).
    let refused_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = std::net::TcpStream::connect(("127.0.0.1", refused_port));
    assert!(refused.is_err(), "a connect to a closed port succeeded");
    std::thread::sleep(Duration::from_millis(1500));
    let err = rec.stop();
    assert!(err.contains(" 0 events lost"), "the recorder lost events: {err}");
    let mode = std::fs::metadata(store.file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the database must be private to root");

    let doc = history_json(store, &[]);
    // (scene, client end, server end) as the processes and the kernel must have them.
    let cases = [
        (&fin_client, ("TIME_WAIT", "fin_local"), ("LAST_ACK", "fin_remote")),
        (&fin_server, ("LAST_ACK", "fin_remote"), ("TIME_WAIT", "fin_local")),
        (&rst_client, ("ESTABLISHED", "rst_sent"), ("ESTABLISHED", "rst_received")),
        (&rst_server, ("ESTABLISHED", "rst_received"), ("ESTABLISHED", "rst_sent")),
    ];
    for (scene, (c_state, c_end), (s_state, s_end)) in cases {
        let (local, remote, opened, closed) = &scene.conns[0];
        let client = one(&doc, local, remote);
        let server = one(&doc, remote, local);
        for (row, pid, comm, state, end, passive) in [
            (client, scene.client_pid, &scene.client_name, c_state, c_end, false),
            (server, scene.server_pid, &scene.server_name, s_state, s_end, true),
        ] {
            let what = format!("{} {local} -> {remote}: {row:#}", scene.client_name);
            assert_eq!(row["pid"].as_u64(), Some(pid as u64), "{what}");
            assert_eq!(row["comm"].as_str(), Some(comm.as_str()), "{what}");
            assert_eq!(row["state"].as_str(), Some(state), "{what}");
            assert_eq!(row["end"].as_str(), Some(end), "{what}");
            assert_eq!(row["passive"].as_bool(), Some(passive), "{what}");
            assert_eq!(row["before_recording"].as_bool(), Some(false), "{what}");
            // Within the process's own clock readings around connect and close.
            let (o, c) = (time_ns(&serde_json::json!({"time": row["opened"]})), time_ns(&serde_json::json!({"time": row["closed"]})));
            assert!(o >= *opened - 2_000_000 && o <= *closed, "{what}: opened {o} outside {opened}..{closed}");
            assert!(c >= o && c <= *closed + 1_000_000_000, "{what}: closed {c} vs {closed}");
        }
    }
    // The listener each scene's server had, its owner and its close.
    for scene in [&fin_client, &rst_server] {
        let port = port_of(&scene.conns[0].1);
        let l: Vec<_> = doc["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "LISTENING" && r["local"]["port"].as_u64() == Some(port as u64))
            .collect();
        assert_eq!(l.len(), 1, "listener on {port}: {l:#?}");
        assert_eq!(l[0]["pid"].as_u64(), Some(scene.server_pid as u64));
        assert_eq!(l[0]["end"], "closed");
        assert!(l[0]["closed"].is_string());
    }
    let refused_rows: Vec<_> =
        doc["connections"].as_array().unwrap().iter().filter(|r| r["remote"]["port"].as_u64() == Some(refused_port as u64)).collect();
    assert_eq!(refused_rows.len(), 1, "{refused_rows:#?}");
    assert_eq!(refused_rows[0]["state"], "SYN_SENT");
    assert_eq!(refused_rows[0]["end"], "rst_received");
    assert_eq!(refused_rows[0]["pid"].as_u64(), Some(std::process::id() as u64));

    // The filters, and the text table.
    let by_comm = history_json(store, &["--comm", &fin_server.client_name]);
    assert_eq!(by_comm["connections"].as_array().unwrap().len(), 1, "{by_comm:#}");
    // A relative TIME is a value, not a flag ("--since -1h" as typed).
    let recent = history_json(store, &["--since", "-1h", "--comm", &fin_server.client_name]);
    assert_eq!(recent["connections"], by_comm["connections"], "--since -1h");
    let (local, remote, ..) = &rst_client.conns[0];
    let by_remote = history_json(store, &["--remote", remote]);
    let n = by_remote["connections"].as_array().unwrap().len();
    assert_eq!(n, 1, "--remote {remote}: the client end only: {by_remote:#}");
    let by_port = history_json(store, &["--port", &port_of(remote).to_string()]);
    assert_eq!(by_port["connections"].as_array().unwrap().len(), 3, "--port: listener, client, server end: {by_port:#}");
    let by_pid = history_json(store, &["--pid", &rst_client.server_pid.to_string()]);
    assert_eq!(by_pid["connections"].as_array().unwrap().len(), 2, "--pid: the listener and the accepted end: {by_pid:#}");
    let q = store.query_args();
    let (code, text, err) = netstat(&with_store(&["--history", "-b"], &q, &["--local", local]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("  Proto  Local Address")), "{text}");
    // The port may have been used before (a TIME_WAIT of another test): the row of this connection.
    let row = lines.iter().position(|l| l.contains(local.as_str()) && l.contains(remote.as_str())).unwrap_or_else(|| panic!("{local} not listed: {text}"));
    let cells: Vec<&str> = lines[row].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(&cells[..6], ["TCP", local.as_str(), remote.as_str(), "ESTABLISHED", "RST sent", &rst_client.client_pid.to_string()], "{text}");
    assert_eq!(lines[row + 1], format!(" [{}]", rst_client.client_name), "-b names the process: {text}");
}

#[test]
fn at_shows_exactly_the_connections_open_then() {
    let dir = Dir::new("at");
    at_instants(&Store::sqlite(&dir));
}

#[test]
fn fleet_at_shows_exactly_the_connections_open_then() {
    let pg = support::postgres::Postgres::start();
    let dir = Dir::new("fat");
    at_instants(&Store::pg(&pg, &dir, "at-host"));
}

fn at_instants(store: &Store) {
    let _alone = beside_churn();
    let rec = Recorder::start(store, &[]);
    // Two connections one after the other, each held 1.5 s; the client closes first.
    let scene = pair("at", &["--count", "2", "--hold-ms", "1500"]);
    std::thread::sleep(Duration::from_millis(1200));
    rec.stop();
    let q = store.query_args();
    let (a, b) = (&scene.conns[0], &scene.conns[1]);
    let at = |t: i128, extra: &[&str]| -> Value {
        let when = rfc3339(t);
        let mut args = with_store(&["-ano", "--json"], &q, &["--at", &when]);
        args.extend_from_slice(extra);
        let (code, out, err) = netstat(&args);
        assert_eq!(code, 0, "--at {when}: {err}");
        let doc: Value = serde_json::from_str(&out).unwrap();
        support::schema::check(&doc, "connections_document");
        doc
    };
    let ours = |doc: &Value| -> Vec<(String, String, String, Option<u64>)> {
        let mut v: Vec<_> = doc["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                // The scene's own ends and its listener only: a TIME_WAIT row
                // of other traffic may share one of its ports (a fresh-clone
                // run listed two from an earlier test's client port).
                let (l, r) = (ep(&c["local"]), ep(&c["remote"]));
                [(&a.0, &a.1), (&a.1, &a.0), (&b.0, &b.1), (&b.1, &b.0)].iter().any(|(x, y)| **x == l && **y == r)
                    || ((l == a.1 || l == b.1) && r == "0.0.0.0:0")
            })
            .map(|c| (ep(&c["local"]), ep(&c["remote"]), c["state"].as_str().unwrap().to_string(), c["pid"].as_u64()))
            .collect();
        v.sort();
        v
    };
    let mid_a = (a.2 + a.3) / 2;
    let listen = a.1.clone();
    let (spid, cpid) = (Some(scene.server_pid as u64), Some(scene.client_pid as u64));
    let mut want = vec![
        (a.0.clone(), a.1.clone(), "ESTABLISHED".to_string(), cpid),
        (a.1.clone(), a.0.clone(), "ESTABLISHED".to_string(), spid),
        (listen.clone(), "0.0.0.0:0".to_string(), "LISTENING".to_string(), spid),
    ];
    want.sort();
    assert_eq!(ours(&at(mid_a, &[])), want, "--at halfway through the first connection");
    // Halfway through the second: the first's client end in TIME_WAIT (no
    // process, as netstat shows it), the second established.
    let mid_b = (b.2 + b.3) / 2;
    let mut want = vec![
        (a.0.clone(), a.1.clone(), "TIME_WAIT".to_string(), Some(0)),
        (b.0.clone(), b.1.clone(), "ESTABLISHED".to_string(), cpid),
        (b.1.clone(), b.0.clone(), "ESTABLISHED".to_string(), spid),
        (listen.clone(), "0.0.0.0:0".to_string(), "LISTENING".to_string(), spid),
    ];
    want.sort();
    let got = ours(&at(mid_b, &[]));
    // JSON gives no pid for a TIME_WAIT row: pid null.
    let got: Vec<_> = got.into_iter().map(|(l, r, s, p)| (l, r, s.clone(), if s == "TIME_WAIT" { p.or(Some(0)) } else { p })).collect();
    assert_eq!(got, want, "--at halfway through the second connection");
    // Before the scene: none of it.
    assert_eq!(ours(&at(a.2 - 2_000_000_000, &[])), vec![], "--at before the scene");
    // -p udp leaves the TCP table out; the text table is Windows' layout.
    assert_eq!(ours(&at(mid_a, &["-p", "udp"])), vec![], "-p udp");
    let when = rfc3339(mid_a);
    let (code, text, err) = netstat(&with_store(&["-ano"], &q, &["--at", &when]));
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("Active Connections") && text.lines().any(|l| l.contains(&a.0) && l.contains("ESTABLISHED") && l.trim_end().ends_with(&scene.client_pid.to_string())), "{text}");
}

#[test]
fn sigkill_mid_burst_leaves_a_readable_database_and_reports_the_gap() {
    let dir = Dir::new("kill");
    sigkill(&Store::sqlite(&dir));
}

#[test]
fn fleet_sigkill_mid_burst_leaves_a_readable_database_and_reports_the_gap() {
    let pg = support::postgres::Postgres::start();
    let dir = Dir::new("fkill");
    let store = Store::pg(&pg, &dir, "kill-host");
    let churn_name = sigkill(&store);
    // What the killed run left unsent went on after the restart, once:
    // PostgreSQL holds exactly the local store's rows of the churn.
    let local: u64 = sqlite(store.file(), "SELECT count(*) FROM conns JOIN procs ON conns.holder = procs.id WHERE procs.comm = ?", &[&churn_name]).parse().unwrap();
    let remote = pg.count(&format!(
        "SELECT count(*) FROM netstat.conns c JOIN netstat.procs p ON p.src = c.src AND p.id = c.holder WHERE p.comm = convert_to('{churn_name}', 'UTF8')"
    ));
    assert_eq!(remote, local, "rows of {churn_name} in PostgreSQL vs the local store");
    assert_eq!(pg.count("SELECT count(*) - count(DISTINCT (src, id)) FROM netstat.conns"), 0, "no row twice");
}

/// Returns the churn's name.
fn sigkill(store: &Store) -> String {
    let _alone = beside_churn();
    let rec = Recorder::start(store, &[]);
    let churn_name = name("kchurn");
    let mut churn = Command::new(load_bin())
        .args(["churn", "--name", &churn_name, "--processes", "2", "--seconds", "4", "--rate", "3000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let killed_at = now_ns();
    rec.kill();
    assert!(churn.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(1000));
    let restarted_at = now_ns();
    let rec = Recorder::start(store, &[]);
    let after = pair("ak", &["--count", "1"]);
    std::thread::sleep(Duration::from_millis(1200));
    rec.stop();
    // SQLite's own check, from another implementation of the reader.
    let check = Command::new("python3")
        .args(["-c", "import sqlite3,sys; d=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(d.execute('PRAGMA integrity_check').fetchone()[0])"])
        .arg(store.file())
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok", "integrity_check: {}", String::from_utf8_lossy(&check.stderr));
    let doc = history_json(store, &["--comm", &churn_name]);
    let rows = doc["connections"].as_array().unwrap();
    let before_kill = rows.iter().filter(|r| time_ns(&serde_json::json!({"time": r["opened"]})) < killed_at - 1_200_000_000).count();
    assert!(before_kill > 1000, "the churn's lifetimes up to the last batch before the kill are kept: {before_kill}");
    let gaps = doc["gaps"].as_array().unwrap();
    let gap = gaps
        .iter()
        .find(|g| g["kind"] == "not_recording")
        .unwrap_or_else(|| panic!("no gap reported: {gaps:#?}"));
    let (from, to) = (time_ns(&serde_json::json!({"time": gap["from"]})), time_ns(&serde_json::json!({"time": gap["to"]})));
    assert!(from <= killed_at && from >= killed_at - 1_500_000_000, "the gap starts at the last heartbeat before the kill: {gap} vs {killed_at}");
    assert!(to >= restarted_at && to <= restarted_at + 30_000_000_000, "the gap ends at the restart: {gap} vs {restarted_at}");
    // The scene after the restart is there too.
    let full = history_json(store, &[]);
    one(&full, &after.conns[0].0, &after.conns[0].1);
    // The stderr says so when the range asked crosses the gap.
    let q = store.query_args();
    let (code, _, err) = netstat(&with_store(&["--history"], &q, &["--comm", &churn_name]));
    assert_eq!(code, 0);
    assert!(err.contains("was not recording"), "{err}");
    churn_name
}

#[test]
fn retention_prunes_the_oldest_and_a_reader_without_write_access_reads_a_live_database() {
    let _alone = beside_churn();
    let dir = Dir::new("retain");
    // A directory only root may write, a database others may read.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.db();
    std::fs::File::create(&db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let rec = Recorder::start(&Store::Sqlite(db.clone()), &["--retain", "3s"]);
    let old = pair("old", &["--count", "1"]);
    let (ol, or, ..) = &old.conns[0];
    // Read as nobody (uid 65534), while it records.
    let read = || -> Value {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", &netstat_bin(), "--history", "--json", "--db"])
            .arg(&db)
            .output()
            .expect("setpriv");
        assert!(out.status.success(), "a read-only reader failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
    };
    // Pruning runs a bounded step every 2 s on a writer niced below the
    // ring's reader: wait (bounded) for the old scene to appear, then to go.
    let poll = |what: &str, secs: u64, done: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let doc = read();
            if done(&doc) {
                return doc;
            }
            assert!(std::time::Instant::now() < deadline, "{what} within {secs} s: {doc:#}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    poll("the old scene recorded", 20, &|d| rows_with(d, ol, or).len() == 1);
    poll("older than --retain 3s: pruned", 60, &|d| rows_with(d, ol, or).is_empty());
    // What came after the horizon is kept.
    let new = pair("new", &["--count", "1"]);
    let (nl, nr, ..) = &new.conns[0];
    let doc = poll("the new scene recorded", 20, &|d| rows_with(d, nl, nr).len() == 1);
    assert!(rows_with(&doc, ol, or).is_empty());
    rec.stop();
    let doc = history_json(&Store::Sqlite(db.clone()), &[]);
    one(&doc, nl, nr);
    assert!(rows_with(&doc, ol, or).is_empty());
    // Asking for the pruned time says the record does not reach back there.
    let since = rfc3339(old.conns[0].2);
    let (code, _, err) = netstat(&["--history", "--db", db.to_str().unwrap(), "--since", &since]);
    assert_eq!(code, 0);
    assert!(err.contains("was not recording"), "{err}");
}

#[test]
fn bad_times_and_missing_or_foreign_files_are_one_line_and_exit_2() {
    let dir = Dir::new("bad");
    let foreign = dir.0.join("notes.txt");
    std::fs::write(&foreign, "not a database, but long enough to have an SQLite header's worth of bytes in it").unwrap();
    let missing = dir.0.join("none.db");
    let f = foreign.to_str().unwrap();
    let m = missing.to_str().unwrap();
    for args in [
        vec!["--history", "--db", m],
        vec!["--history", "--db", f],
        vec!["-ano", "--at", "-10m", "--db", m],
        vec!["-ano", "--at", "yesterday", "--db", m],
        vec!["--history", "--since", "2026-13-01 00:00", "--db", m],
        vec!["--history", "--until", "-5x"],
        vec!["--record", "--retain", "forever"],
        vec!["--record", "--max-db-size", "12"],
        vec!["--since", "-1h"],
        vec!["--stream", "--history"],
    ] {
        let (code, out, err) = netstat(&args);
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("netstat: "), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    assert!(!missing.exists(), "a query never creates the database");
}

/// The store's flag of an accepted connection (sources::history::flag).
const PASSIVE: i64 = 4;

/// Maximum churn: a softirq changes sockets' states while our programs run
/// in process context (close(), connect(), a released lock's backlog), so
/// the kernel skips the main programs thousands of times a second; their
/// copies handle those firings (rescue.rs). Every connection the churn made
/// (its own count) must be there once at each end, holder named, with no
/// event lost. (Before the marks named the socket's cookie and cleared
/// their leftovers, a few firings per 10 s were lost, or reported twice.)
#[test]
fn maximum_churn_is_recorded_whole_each_end_once() {
    let _alone = CHURN.write().unwrap_or_else(|e| e.into_inner());
    let _purge = TimeWaitGone;
    let dir = Dir::new("churn");
    let rec = Recorder::start(&Store::sqlite(&dir), &[]);
    let churn_name = name("mc");
    let out = load(&["churn", "--name", &churn_name, "--processes", "2", "--seconds", "8"]);
    let made = out.iter().find_map(|l| l["connections"].as_u64()).unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(out[0]["errors"], 0, "{out:?}");
    assert!(made > 10_000, "the churn made {made} connections");
    // Their TIME_WAIT ends come 60 s later; what is recorded now is each
    // connection's two ends as the kernel reported them so far.
    std::thread::sleep(Duration::from_millis(1500));
    let err = rec.stop();
    assert!(err.contains("; 0 events lost"), "events lost at maximum churn: {err}");
    let db = dir.db();
    let by_comm = |comm: &str, passive: bool| -> u64 {
        sqlite(
            &db,
            &format!(
                "SELECT count(*) FROM conns JOIN procs ON conns.holder = procs.id WHERE procs.comm = ? AND (conns.flags & {PASSIVE}) = {}",
                if passive { PASSIVE } else { 0 }
            ),
            &[comm],
        )
        .parse()
        .unwrap()
    };
    let clients = by_comm(&churn_name, false);
    let server_ends = by_comm(&format!("{churn_name}-srv"), true);
    assert_eq!((clients, server_ends), (made, made), "client and server ends recorded vs connections the churn made");
    let cookies: u64 = sqlite(&db, "SELECT count(DISTINCT cookie) FROM conns WHERE cookie != 0 AND lport != 0", &[]).parse().unwrap();
    let rows: u64 = sqlite(&db, "SELECT count(*) FROM conns WHERE cookie != 0 AND lport != 0", &[]).parse().unwrap();
    assert_eq!(cookies, rows, "one record per socket");
    // No kernel loss recorded. (A `no_cookie` row counts events the
    // recorder could not key to a socket, from other traffic, e.g. the
    // tests beside it; the churn's ends are all counted above.)
    assert_eq!(sqlite(&db, "SELECT count(*) FROM lost WHERE reason != 'no_cookie'", &[]), "0", "lost: {}", sqlite(&db, "SELECT group_concat(reason || ':' || count) FROM lost", &[]));
}
