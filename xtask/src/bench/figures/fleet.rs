//! Figure 8: the fleet store (issue 17). A PostgreSQL 15 cluster of the
//! bench's own (initdb in the scratch directory, a free loopback port,
//! default durability, stopped at the end): how many records per second
//! one recorder forwards into it (a backlog of lifetimes written through
//! the recorder's writer, as an outage leaves it), the bytes each
//! connection takes there, and whether a recorder at maximum churn keeps
//! up. Rows are counted with psql and python3's sqlite3, not with netstat.
use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::Section;
use crate::bench::{
    options::{Bins, Opts},
    process::{collect, stop},
    sampling::wait_idle,
    workload::churn,
};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway cluster, stopped and removed on drop.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

fn as_postgres(prog: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", &format!("{PG_BIN}/{prog}")]);
    c
}

impl Cluster {
    fn start(scratch: &Path) -> Result<Cluster> {
        let dir = scratch.join(format!("bench-fleet-pg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let st = Command::new("chown").arg("postgres:postgres").arg(&dir).status()?;
        if !st.success() {
            bail!("chown postgres {}", dir.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let c = Cluster { dir, port };
        let data = c.dir.join("data");
        let out = as_postgres("initdb").arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "--no-instructions"]).current_dir(&c.dir).output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let conf = format!("\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n", c.dir.display());
        fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?.write_all(conf.as_bytes())?;
        let out = as_postgres("pg_ctl").arg("-D").arg(&data).arg("-l").arg(c.dir.join("log")).args(["-w", "-t", "60", "start"]).current_dir(&c.dir).output()?;
        if !out.status.success() {
            bail!("pg_ctl start: {}{}", String::from_utf8_lossy(&out.stderr), fs::read_to_string(c.dir.join("log")).unwrap_or_default());
        }
        Ok(c)
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn psql(&self, sql: &str) -> Result<String> {
        let out = Command::new("psql").args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-X", "-At", "-d", "postgres", "-c", sql]).output()?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn count(&self, sql: &str) -> Result<u64> {
        let v = self.psql(sql)?;
        Ok(if v.is_empty() { 0 } else { v.parse().with_context(|| format!("{sql}: {v}"))? })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn remove_db(db: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{ext}", db.display()));
    }
}

const CONNS: &str = "SELECT count(*) FROM netstat.conns";
/// The backlog's rows (history-fill names its processes fill-N).
const FILLED: &str = "SELECT count(*) FROM netstat.conns c JOIN netstat.procs p ON p.src = c.src AND p.id = c.holder WHERE convert_from(p.comm, 'UTF8') LIKE 'fill-%'";

pub fn measure(opts: &Opts, bins: &Bins, section: &mut Section) -> Result<()> {
    let Section { body: s, notes } = section;
    eprintln!("bench: figure 8, fleet store (PostgreSQL)");
    let scratch = PathBuf::from(std::env::var("NETSTAT_BENCH_SCRATCH").unwrap_or_else(|_| "/var/tmp".into()));
    let pg = Cluster::start(&scratch)?;
    let n: u64 = std::env::var("NETSTAT_BENCH_FLEET_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);

    // (a) A backlog, as an outage leaves it, forwarded by one recorder.
    let db = scratch.join("bench-fleet-backlog.db");
    remove_db(&db);
    let fill = Command::new(&bins.load).args(["history-fill", "--outbox", "--connections", &n.to_string(), "--db"]).arg(&db).output()?;
    if !fill.status.success() {
        bail!("history-fill: {}", String::from_utf8_lossy(&fill.stderr));
    }
    wait_idle();
    let t0 = Instant::now();
    let mut rec = Command::new(&bins.netstat)
        .args(["--record", "--db", &pg.url(), "--host-name", "bench-a", "--local-db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting netstat --record")?;
    let err = collect(rec.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut have = 0;
    while Instant::now() < deadline {
        have = pg.count(FILLED).unwrap_or(0);
        if have >= n {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let secs = t0.elapsed().as_secs_f64();
    stop(&mut rec);
    let _ = err.join();
    if have < n {
        bail!("only {have} of {n} rows reached PostgreSQL in {secs:.0} s");
    }
    let rate = n as f64 / secs;
    let conn_bytes = pg.count("SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'netstat.conns'::regclass")?;
    let all_bytes = pg.count("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'netstat' AND c.relkind = 'r'")?;
    let rows = pg.count(CONNS)?;
    let dups = pg.count("SELECT count(*) - count(DISTINCT (src, id)) FROM netstat.conns")?;
    remove_db(&db);

    // (b) Maximum churn recorded straight into it.
    let churn_db = scratch.join("bench-fleet-churn.db");
    remove_db(&churn_db);
    wait_idle();
    let before = pg.count(CONNS)?;
    let mut rec = Command::new(&bins.netstat)
        .args(["--record", "--db", &pg.url(), "--host-name", "bench-b", "--local-db"])
        .arg(&churn_db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let err = collect(rec.stderr.take().unwrap());
    thread::sleep(Duration::from_secs(4));
    let seconds = opts.churn_seconds.max(10);
    let c = churn(bins, seconds, 0, 2)?;
    let ended = Instant::now();
    let local = |db: &Path| -> Result<u64> {
        let out = Command::new("python3")
            .args(["-c", "import sqlite3,sys; d=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(d.execute('SELECT count(*) FROM conns').fetchone()[0])"])
            .arg(db)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
    };
    let backlog_at_end = local(&churn_db)?.saturating_sub(pg.count(CONNS)? - before);
    // Caught up: PostgreSQL holds every row the local store holds.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut caught = None;
    while Instant::now() < deadline {
        let l = local(&churn_db)?;
        if pg.count(CONNS)? - before >= l && l > 0 {
            caught = Some(ended.elapsed().as_secs_f64());
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    stop(&mut rec);
    let stderr = err.join().unwrap_or_default();
    let lost: u64 = stderr.lines().filter_map(|l| l.split("; ").nth(1)?.strip_suffix(" events lost")?.parse::<u64>().ok()).sum();
    let churn_rows = pg.count(CONNS)? - before;
    let churn_local = local(&churn_db)?;
    remove_db(&churn_db);

    let _ = writeln!(
        s,
        "A PostgreSQL 15 cluster of the bench's own on a loopback port (initdb defaults: fsync on, synchronous_commit on). \
         **Forwarding rate**: {n} lifetimes written into a local store through the recorder's writer with its outbox \
         (`netstat-load history-fill --outbox`, the backlog an outage leaves), then one `netstat --record --db URL --local-db FILE` \
         forwards them; time from its start until psql counts all {n} rows. **Size**: PostgreSQL's own \
         `pg_total_relation_size` of the conns partitions with their indexes, per row. **Keeping up**: the same \
         recorder into the same server at maximum churn (`netstat-load churn --processes 2`, {seconds} s), the rows \
         still to forward when the churn ends, and how long until PostgreSQL holds every row the local store holds \
         (python3's sqlite3 counts them).\n"
    );
    let _ = writeln!(s, "| measure | value |\n|---|---|");
    let _ = writeln!(s, "| records forwarded per second (backlog of {n}) | {rate:.0} ({secs:.1} s) |");
    let _ = writeln!(s, "| rows in PostgreSQL / duplicates | {rows} / {dups} |");
    let _ = writeln!(s, "| bytes per connection, conns with indexes | {:.0} |", conn_bytes as f64 / rows.max(1) as f64);
    let _ = writeln!(s, "| bytes per connection, every netstat table | {:.0} |", all_bytes as f64 / rows.max(1) as f64);
    let _ = writeln!(s, "| maximum churn: connections/s, events lost | {:.0}, {lost} |", c.rate);
    let _ = writeln!(s, "| maximum churn: rows to forward when it ended | {backlog_at_end} |");
    let _ = writeln!(
        s,
        "| maximum churn: PostgreSQL caught up after | {} |",
        caught.map_or("not within 300 s".to_string(), |t| format!("{t:.1} s"))
    );
    let _ = writeln!(s, "| maximum churn: rows in PostgreSQL / in the local store | {churn_rows} / {churn_local} |");
    notes.push(format!(
        "{rate:.0} records/s forwarded into PostgreSQL; {:.0} B/connection there; at maximum churn ({:.0} conn/s) caught up {} after the churn, {churn_rows}/{churn_local} rows",
        conn_bytes as f64 / rows.max(1) as f64,
        c.rate,
        caught.map_or("NEVER (300 s)".to_string(), |t| format!("{t:.1} s"))
    ));
    Ok(())
}
