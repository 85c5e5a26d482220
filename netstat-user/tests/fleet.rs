//! Fleet history (issue 17): recorders write into one real PostgreSQL 15
//! (a throwaway cluster on a loopback port, always stopped afterwards),
//! and every query runs against it. The witnesses are the processes' own
//! reports, psql's answers and each recorder's local SQLite store (read by
//! python3's sqlite3). The history tests run against PostgreSQL as well
//! (history.rs, `fleet_*`).
//! vm: host only (PostgreSQL, psql, openssl and python3 are not in the guests)
mod support;

use std::{process::Command, time::Duration};

use serde_json::Value;
use support::{history::*, postgres::Postgres, *};

fn hosts_of(doc: &Value) -> Vec<String> {
    let mut h: Vec<String> = doc["connections"].as_array().unwrap().iter().map(|r| r["host"].as_str().unwrap_or("(none)").to_string()).collect();
    h.sort();
    h
}

/// Rows of `comm` (holder) in PostgreSQL, by host, (passive or not).
fn pg_rows(pg: &Postgres, host: &str, comm: &str, passive: bool) -> u64 {
    pg.count(&format!(
        "SELECT count(*) FROM netstat.conns c JOIN netstat.sources s ON s.id = c.src JOIN netstat.procs p ON p.src = c.src AND p.id = c.holder
         WHERE s.host = '{host}' AND p.comm = convert_to('{comm}', 'UTF8') AND (c.flags & 4) {} 0",
        if passive { "!=" } else { "=" }
    ))
}

#[test]
fn two_recorders_with_their_own_host_names_share_one_postgres() {
    let pg = Postgres::start();
    let dir = Dir::new("fleet2");
    let (alpha, beta) = (Store::pg(&pg, &dir, "alpha.example"), Store::pg(&pg, &dir, "beta.example"));
    let (ra, rb) = (Recorder::start(&alpha, &[]), Recorder::start(&beta, &[]));
    let (srv, cli) = (name("f2s"), name("f2c"));
    let lines = load(&["pair", "--server-name", &srv, "--client-name", &cli, "--addr", "127.0.0.1", "--count", "1", "--hold-ms", "400", "--timestamps"]);
    let conn = lines.iter().find(|l| l.get("conn").is_some()).expect("the pair's connection line").clone();
    let client_pid = lines.iter().find(|l| l["role"] == "client").and_then(|l| l["pid"].as_u64()).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    for r in [ra, rb] {
        let err = r.stop();
        assert!(err.contains("forwarded ") && !err.contains("wait in the local store"), "{err}");
    }
    // Both sources are there, each with its own copy of what it saw.
    assert_eq!(pg.psql("SELECT string_agg(host, ',' ORDER BY host) FROM netstat.sources"), "alpha.example,beta.example");
    for s in [&alpha, &beta] {
        let Store::Pg { host, .. } = s else { unreachable!() };
        let local: u64 = sqlite(s.file(), "SELECT count(*) FROM conns", &[]).parse().unwrap();
        let remote = pg.count(&format!("SELECT count(*) FROM netstat.conns c JOIN netstat.sources s ON s.id = c.src WHERE s.host = '{host}'"));
        assert_eq!(remote, local, "{host}: PostgreSQL vs its local store");
    }
    let url = pg.url();
    // Across hosts: the client end once per host, each naming its host.
    let (code, out, err) = netstat(&["--history", "--json", "--db", &url, "--comm", &cli]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    schema::check(&doc, "history_document");
    let client_ends: Vec<&Value> = doc["connections"].as_array().unwrap().iter().filter(|r| r["passive"] == false).collect();
    assert_eq!(client_ends.len(), 2, "{doc:#}");
    for r in &client_ends {
        assert_eq!(ep(&r["local"]), conn["local"].as_str().unwrap(), "{r:#}");
        assert_eq!(r["pid"].as_u64(), Some(client_pid), "{r:#}");
        assert_eq!(r["end"], "fin_local", "{r:#}");
    }
    let mut hosts: Vec<&str> = client_ends.iter().map(|r| r["host"].as_str().unwrap()).collect();
    hosts.sort();
    assert_eq!(hosts, ["alpha.example", "beta.example"]);
    // One host.
    let (code, out, err) = netstat(&["--history", "--json", "--db", &url, "--host", "beta.example", "--comm", &cli]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let h = hosts_of(&doc);
    assert!(!h.is_empty() && h.iter().all(|x| x == "beta.example"), "only beta's: {doc:#}");
    // The text table names the host first when it spans hosts.
    let (code, text, err) = netstat(&["--history", "--db", &url, "--comm", &cli]);
    assert_eq!(code, 0, "{err}");
    let head = text.lines().find(|l| l.contains("Proto")).unwrap_or_else(|| panic!("{text}"));
    assert!(head.trim_start().starts_with("Host") && head.contains("Local Address"), "{text}");
    for h in ["alpha.example", "beta.example"] {
        assert_eq!(text.lines().filter(|l| l.trim_start().starts_with(h) && l.contains(conn["local"].as_str().unwrap())).count(), 1, "{h}: {text}");
    }
    // One host's table at an instant inside the connection.
    let mid = (conn["opened_ns"].as_i64().unwrap() + conn["closed_ns"].as_i64().unwrap()) / 2;
    let when = format!("@{}", mid / 1_000_000_000);
    let iso = String::from_utf8(Command::new("date").args(["-u", "-d", &when, "+%Y-%m-%dT%H:%M:%S"]).output().unwrap().stdout).unwrap();
    let at = format!("{}.{:09}Z", iso.trim(), mid % 1_000_000_000);
    let (code, out, err) = netstat(&["-ano", "--json", "--db", &url, "--at", &at, "--host", "alpha.example"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    schema::check(&doc, "connections_document");
    let open: Vec<&Value> = doc["connections"].as_array().unwrap().iter().filter(|c| ep(&c["local"]) == conn["local"].as_str().unwrap()).collect();
    assert_eq!(open.len(), 1, "{doc:#}");
    assert_eq!(open[0]["state"], "ESTABLISHED");
    assert_eq!(open[0]["pid"].as_u64(), Some(client_pid));
}

/// PostgreSQL stopped in the middle of a burst and started again: every
/// connection of the burst reaches it, exactly once.
#[test]
fn postgres_stopped_mid_burst_loses_and_duplicates_nothing() {
    let mut pg = Postgres::start();
    let dir = Dir::new("outage");
    let store = Store::pg(&pg, &dir, "outage-host");
    let rec = Recorder::start(&store, &[]);
    let churn_name = name("oc");
    let churn = std::process::Command::new(load_bin())
        .args(["churn", "--name", &churn_name, "--processes", "2", "--seconds", "8", "--rate", "3000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    pg.stop();
    std::thread::sleep(Duration::from_secs(3));
    pg.start_again();
    let out = churn.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let made = summary["connections"].as_u64().unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(made > 10_000, "{summary}");
    std::thread::sleep(Duration::from_millis(1500));
    // The record ends here: only the time after this is not recorded.
    let stopped_ns = now_ns();
    let err = rec.stop();
    assert!(err.contains("; 0 events lost"), "{err}");
    assert!(err.contains("recording locally, forwarding when it is back"), "the outage is said: {err}");
    assert!(err.contains("back after"), "and the return: {err}");
    assert!(!err.contains("wait in the local store"), "everything forwarded by the stop: {err}");
    // Every connection's two ends, once each.
    assert_eq!(pg_rows(&pg, "outage-host", &churn_name, false), made, "client ends in PostgreSQL");
    assert_eq!(pg_rows(&pg, "outage-host", &format!("{churn_name}-srv"), true), made, "server ends in PostgreSQL");
    assert_eq!(pg.count("SELECT count(*) - count(DISTINCT (src, id)) FROM netstat.conns"), 0, "no row twice");
    assert_eq!(pg.count("SELECT count(*) - count(DISTINCT cookie) FROM netstat.conns WHERE cookie IS NOT NULL AND lport != 0"), 0, "no socket twice");
    let local: u64 = sqlite(store.file(), "SELECT count(*) FROM conns", &[]).parse().unwrap();
    assert_eq!(pg.count("SELECT count(*) FROM netstat.conns"), local, "PostgreSQL holds what the local store holds");
    assert_eq!(sqlite(store.file(), "SELECT count(*) FROM outbox", &[]), "0");
    // The outage is not a gap: netstat was recording all along.
    let (code, out, e) = netstat(&["--history", "--json", "--db", &pg.url(), "--host", "outage-host", "--comm", &churn_name]);
    assert_eq!(code, 0, "{e}");
    let doc: Value = serde_json::from_str(&out).unwrap();

    let gaps: Vec<&Value> = doc["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kind"] == "not_recording" && time_ns(&serde_json::json!({"time": g["from"]})) < stopped_ns)
        .collect();
    assert!(gaps.is_empty(), "no gap during the outage: {gaps:#?}");
}

/// TLS when the server offers it, verified against a root when asked;
/// the password from PGPASSWORD or ~/.pgpass; bad URLs and an empty or
/// unreachable database are one line each.
#[test]
fn tls_passwords_and_bad_databases() {
    let mut pg = Postgres::start();
    let root = pg.enable_tls();
    pg.add_password_role("fleet", "s3cret-pw");
    let dir = Dir::new("tls");
    let url = format!("postgresql://fleet@127.0.0.1:{}/postgres", pg.port);
    // No schema yet: a query says so (exit 2).
    let (code, _, err) = Command::new(netstat_bin())
        .args(["--history", "--db", &url])
        .env("PGPASSWORD", "s3cret-pw")
        .output()
        .map(|o| (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string()))
        .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no netstat history") && err.lines().count() == 1, "{err}");
    // A recorder with the password in PGPASSWORD, over TLS (sslmode prefer).
    let local = dir.0.join("local.db");
    let mut rec = Command::new(netstat_bin())
        .args(["--record", "--backend", &backend(), "--db", &url, "--local-db"])
        .arg(&local)
        .args(["--host-name", "tls-host", "--duration", "6"])
        .env("PGPASSWORD", "s3cret-pw")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ssl = loop {
        let n = pg.count("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'netstat' AND s.ssl AND a.usename = 'fleet'");
        if n > 0 || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let st = rec.wait().unwrap();
    let mut e = String::new();
    std::io::Read::read_to_string(&mut rec.stderr.take().unwrap(), &mut e).unwrap();
    assert!(st.success(), "{e}");
    assert_eq!(ssl, 1, "the recorder's session is encrypted: {e}");
    let run = |args: &[&str], envs: &[(&str, &str)]| -> (Option<i32>, String) {
        let mut c = Command::new(netstat_bin());
        c.args(args).env_remove("PGPASSWORD");
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let rootarg = format!("{url}?sslmode=verify-full&sslrootcert={}", root.display());
    assert_eq!(run(&["--history", "--db", &rootarg], &[("PGPASSWORD", "s3cret-pw")]).0, Some(0), "verify-full against the server's own certificate");
    // Another certificate as the root: refused, one line, exit 1.
    let other = support::postgres::make_ca(&dir.0, "other");
    let wrong = format!("{url}?sslmode=verify-full&sslrootcert={}", other.display());
    let (code, err) = run(&["--history", "--db", &wrong], &[("PGPASSWORD", "s3cret-pw")]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // No password: refused by the server, one line.
    let (code, err) = run(&["--history", "--db", &url], &[("HOME", dir.0.to_str().unwrap())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.lines().count() == 1 && err.contains("password"), "{err}");
    // ~/.pgpass, private: used; readable by others: ignored, said.
    let pgpass = dir.0.join(".pgpass");
    std::fs::write(&pgpass, format!("# fleet\n127.0.0.1:{}:postgres:fleet:s3cret-pw\n", pg.port)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = run(&["--history", "--db", &url, "--host", "tls-host"], &[("HOME", dir.0.to_str().unwrap())]);
    assert_eq!(code, Some(0), "~/.pgpass: {err}");
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run(&["--history", "--db", &url], &[("HOME", dir.0.to_str().unwrap())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(".pgpass: ignored"), "{err}");
    // Usage errors: exit 2, one line.
    let file = dir.0.join("h.db");
    for args in [
        vec!["--history", "--db", "postgresql://u@127.0.0.1:notaport/x"],
        vec!["--history", "--db", "postgresql://u@127.0.0.1/x?sslmode=sometimes"],
        vec!["--history", "--host", "a", "--db", file.to_str().unwrap()],
        vec!["--history", "--local-db", "/tmp/x.db", "--db", &url],
        vec!["--record", "--host-name", "a"],
        vec!["--record", "--db", &url, "--host-name", "bad\nname"],
    ] {
        let (code, err) = run(&args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // Nothing listens: exit 1, one line.
    pg.stop();
    let (code, err) = run(&["--history", "--db", &url], &[("PGPASSWORD", "s3cret-pw")]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    pg.start_again();
}

/// Retention drops whole partitions (a database made under --retain 4s
/// has partitions 1 s wide), and a query of the pruned time says so.
#[test]
fn retention_drops_whole_partitions() {
    let pg = Postgres::start();
    let dir = Dir::new("fretain");
    let store = Store::pg(&pg, &dir, "retain-host");
    let rec = Recorder::start(&store, &["--retain", "4s"]);
    let (srv, cli) = (name("frs"), name("frc"));
    load(&["pair", "--server-name", &srv, "--client-name", &cli, "--addr", "127.0.0.1", "--count", "1", "--server-close-first"]);
    let rows = |comm: &str| pg.count(&format!("SELECT count(*) FROM netstat.conns c JOIN netstat.procs p ON p.src = c.src AND p.id = c.holder WHERE p.comm = convert_to('{comm}', 'UTF8')"));
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what} within 40 s");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait("the scene forwarded", &|| rows(&cli) == 1);
    assert_eq!(pg.count("SELECT value FROM netstat.meta WHERE key = 'partition_us'"), 1_000_000);
    let parts = || pg.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'netstat.conns'::regclass");
    assert!(parts() >= 2, "the open partition and the scene's");
    wait("the scene pruned", &|| rows(&cli) == 0);
    let (srv2, cli2) = (name("frs"), name("frc"));
    load(&["pair", "--server-name", &srv2, "--client-name", &cli2, "--addr", "127.0.0.1", "--count", "1"]);
    wait("a later scene forwarded", &|| rows(&cli2) == 1);
    // No partition that ended before the horizon (4 s, and 4 s for the
    // pass that drops it) is left.
    let stale = pg.count(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'netstat.conns'::regclass
         AND CASE WHEN c.relname ~ '^conns_p[0-9]+$' THEN (substr(c.relname, 8)::bigint + 1) * 1000000 < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - 8000000 ELSE false END",
    );
    assert!(parts() >= 2);
    rec.stop();
    assert_eq!(stale, 0, "partitions past the horizon are dropped");
    let (code, _, err) = netstat(&["--history", "--db", &pg.url(), "--host", "retain-host", "--since=-5m"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("was not recording"), "the pruned time is a gap: {err}");
}
