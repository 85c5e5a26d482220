//! The history store: one SQLite database (WAL) holding every recorded
//! connection lifetime, the processes and places they name, the recorder's
//! runs (so the time it was not recording is known) and its lost events.
//! Owns the file format and every SQL statement; knows nothing of the
//! kernel or of output formats. `writer` fills it, `query` reads it.
pub mod pg;
pub mod query;
pub mod writer;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use rusqlite::{Connection as Db, OpenFlags, OptionalExtension, types::Value};

/// The recorder's default database.
pub const DEFAULT_DB: &str = "/var/lib/netstat/history.db";
/// What `meta.format` says in every netstat history database.
const FORMAT: &str = "netstat-history";
/// The layout this build writes. A newer netstat reads every older
/// version; an older one refuses a newer database rather than misread it.
pub const SCHEMA_VERSION: i64 = 1;

/// `conns.flags` bits.
pub mod flag {
    pub const UDP: i64 = 1;
    pub const IPV6: i64 = 2;
    pub const PASSIVE: i64 = 4;
    pub const BEFORE_RECORDING: i64 = 8;
    pub const FIN_LOCAL_FIRST: i64 = 16;
    pub const FIN_REMOTE_FIRST: i64 = 32;
    /// Rows in `holders` name its holders over time.
    pub const HANDED_OVER: i64 = 64;
}

/// `conns.span` of a row still open.
pub const SPAN_OPEN: i64 = 63;

/// The interval index's bucket: a row whose listed life (close, plus
/// TIME_WAIT after an active close) lasted `d` µs is in bucket
/// `bit_length(d)`, so `d < 2^span`, and every row listed at or after `t`
/// in bucket `b` opened after `t - 2^b`: a time query reads one short
/// range of `(span, opened)` per bucket instead of every row that closed
/// later.
pub fn span_of(listed_us: Option<i64>) -> i64 {
    match listed_us {
        None => SPAN_OPEN,
        Some(d) => (64 - (d.max(0) as u64).leading_zeros()) as i64,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{}: no such history database", .0.display())]
    Missing(PathBuf),
    #[error("{}: not a netstat history database{}", .0.display(), .1)]
    Foreign(PathBuf, String),
    #[error("{}: written by a newer netstat (schema version {}; this one reads up to {SCHEMA_VERSION})", .0.display(), .1)]
    Newer(PathBuf, i64),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    #[error("{}: {}", .0.display(), .1)]
    Sqlite(PathBuf, rusqlite::Error),
    #[error("{0}: {1}")]
    Pg(String, String),
    #[error("{0}: written by a newer netstat (schema version {1}; this one reads up to {v})", v = pg::SCHEMA_VERSION)]
    PgNewer(String, i64),
    #[error("{0}: no netstat history in this database (a recorder creates it: netstat --record --db URL)")]
    PgEmpty(String),
}

impl HistoryError {
    /// Errors that are the user's to fix (a wrong path or file): exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(self, HistoryError::Missing(_) | HistoryError::Foreign(..) | HistoryError::Newer(..) | HistoryError::PgNewer(..) | HistoryError::PgEmpty(_))
    }
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
    move |e| HistoryError::Sqlite(path.to_path_buf(), e)
}

const SCHEMA: &str = "
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE runs(
    id INTEGER PRIMARY KEY,
    started_us INTEGER NOT NULL,
    heartbeat_us INTEGER NOT NULL,
    stopped_us INTEGER,
    boot_id TEXT,
    pid INTEGER,
    version TEXT
);
CREATE TABLE lost(id INTEGER PRIMARY KEY, at_us INTEGER NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL);
CREATE TABLE procs(
    id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    pid_start INTEGER,
    comm BLOB NOT NULL,
    exe BLOB,
    uid INTEGER,
    parent_pid INTEGER,
    parent_comm BLOB,
    ns_pid INTEGER
);
CREATE INDEX procs_pid ON procs(pid);
CREATE TABLE places(
    id INTEGER PRIMARY KEY,
    netns INTEGER,
    cgroup_id INTEGER,
    cgroup BLOB,
    unit TEXT,
    runtime TEXT,
    container TEXT,
    container_name BLOB,
    pod TEXT
);
CREATE TABLE conns(
    id INTEGER PRIMARY KEY,
    flags INTEGER NOT NULL,
    span INTEGER NOT NULL,
    opened INTEGER NOT NULL,
    lived INTEGER,
    estab INTEGER,
    closing INTEGER,
    laddr,
    lport INTEGER,
    raddr,
    rport INTEGER,
    state INTEGER,
    end INTEGER NOT NULL,
    sent INTEGER,
    recv INTEGER,
    holder INTEGER,
    creator INTEGER,
    place INTEGER,
    cookie INTEGER
);
CREATE INDEX conns_time ON conns(span, opened);
CREATE INDEX conns_remote ON conns(raddr);
CREATE TABLE holders(conn INTEGER NOT NULL, since INTEGER NOT NULL, proc INTEGER);
CREATE INDEX holders_conn ON holders(conn);
";

/// An address as the store keeps it: IPv4 as an integer, IPv6 as 16 bytes.
pub fn addr_value(a: IpAddr) -> Value {
    match a {
        IpAddr::V4(v4) => Value::Integer(u32::from(v4) as i64),
        IpAddr::V6(v6) => Value::Blob(v6.octets().to_vec()),
    }
}

pub fn addr_from(v: &Value) -> IpAddr {
    match v {
        Value::Integer(n) => IpAddr::V4(Ipv4Addr::from(*n as u32)),
        Value::Blob(b) if b.len() == 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Settings every connection to the database uses.
fn configure(db: &Db, path: &Path) -> Result<(), HistoryError> {
    // A reader waits out a writer's checkpoint rather than fail.
    db.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql(path))?;
    Ok(())
}

/// Open for writing (the recorder), creating the file (mode 0600: it holds
/// every user's connections) and its directory when missing.
pub fn open_write(path: &Path) -> Result<Db, HistoryError> {
    let fresh = !path.exists();
    if fresh {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| HistoryError::Io(dir.to_path_buf(), e))?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| HistoryError::Io(path.to_path_buf(), e))?;
    }
    let db = Db::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sql(path))?;
    configure(&db, path)?;
    let empty: i64 = db.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(|e| foreign(path, e))?;
    if empty == 0 {
        // Freed pages go back to the file system when pruning asks.

        db.execute_batch("PRAGMA journal_mode = WAL;").map_err(sql(path))?;
        let tx = db.unchecked_transaction().map_err(sql(path))?;
        tx.execute_batch(SCHEMA).map_err(sql(path))?;
        tx.execute("INSERT INTO meta(key, value) VALUES ('format', ?1), ('schema_version', ?2), ('created_us', ?3)", rusqlite::params![
            FORMAT,
            SCHEMA_VERSION,
            now_us()
        ])
        .map_err(sql(path))?;
        tx.commit().map_err(sql(path))?;
    } else {
        check(&db, path)?;
        db.execute_batch("PRAGMA journal_mode = WAL;").map_err(sql(path))?;
    }
    // WAL with NORMAL: a crash of netstat loses nothing committed; a power
    // loss may lose the last commits, never the file's consistency.
    // A larger page cache keeps the indexes' hot pages between batches;
    // checkpoints every 64 MiB of log, not 4, copy each page fewer times.
    db.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 16384;",
    )
    .map_err(sql(path))?;
    Ok(db)
}

/// Open read-only (every query): works while the recorder writes, and for
/// a reader that cannot write the directory or the file.
pub fn open_read(path: &Path) -> Result<Db, HistoryError> {
    if !path.exists() {
        return Err(HistoryError::Missing(path.to_path_buf()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Db::open_with_flags(path, flags).map_err(sql(path))?;
    configure(&db, path)?;
    match check(&db, path) {
        Ok(()) => Ok(db),
        // A WAL database whose -shm this reader may not create (no
        // recorder running, a directory it cannot write): read it as it
        // stands on disk.
        Err(HistoryError::Sqlite(_, e)) if cannot_open_shm(&e) => {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            let db = Db::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI).map_err(sql(path))?;
            check(&db, path)?;
            Ok(db)
        }
        Err(e) => Err(e),
    }
}

fn cannot_open_shm(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly))
}

/// `path` for an SQLite URI: absolute, with `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = String::new();
    for b in abs.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{b:02X}")),
            b if b.is_ascii_graphic() || *b == b' ' => out.push(*b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn foreign(path: &Path, e: rusqlite::Error) -> HistoryError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            HistoryError::Foreign(path.to_path_buf(), String::new())
        }
        _ => HistoryError::Sqlite(path.to_path_buf(), e),
    }
}

/// A netstat history database of a version this build reads.
fn check(db: &Db, path: &Path) -> Result<(), HistoryError> {
    let has_meta: i64 = db
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'", [], |r| r.get(0))
        .map_err(|e| foreign(path, e))?;
    if has_meta == 0 {
        return Err(HistoryError::Foreign(path.to_path_buf(), " (an SQLite file without netstat's tables)".into()));
    }
    let get = |k: &str| -> Result<Option<Value>, HistoryError> {
        db.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get::<_, Value>(0)).optional().map_err(sql(path))
    };
    if get("format")? != Some(Value::Text(FORMAT.into())) {
        return Err(HistoryError::Foreign(path.to_path_buf(), " (its meta table is not netstat's)".into()));
    }
    match get("schema_version")? {
        Some(Value::Integer(v)) if v <= SCHEMA_VERSION => Ok(()),
        Some(Value::Integer(v)) => Err(HistoryError::Newer(path.to_path_buf(), v)),
        _ => Err(HistoryError::Foreign(path.to_path_buf(), " (no schema version)".into())),
    }
}

/// The wall clock in µs since the Unix epoch.
pub fn now_us() -> i64 {
    (crate::timefmt::realtime_ns() / 1000) as i64
}

/// This boot's id (a socket cookie means the same socket only within one
/// boot).
pub fn boot_id(proc_root: &Path) -> Option<String> {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id")).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_bound_the_listed_life() {
        assert_eq!(span_of(Some(0)), 0);
        assert_eq!(span_of(Some(1)), 1);
        assert_eq!(span_of(Some(1023)), 10);
        assert_eq!(span_of(Some(1024)), 11);
        assert_eq!(span_of(None), SPAN_OPEN);
        for d in [0i64, 1, 5, 999, 1 << 20, 60_000_123] {
            assert!(d < 1i64 << span_of(Some(d)), "{d}");
        }
    }

    #[test]
    fn addresses_round_trip_and_match_mapped_forms() {
        for a in ["127.0.0.1", "203.0.113.7", "::1", "2001:db8::7", "::ffff:10.0.0.1"] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(addr_from(&addr_value(ip)), ip);
        }
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(query::ip_forms(v4).contains(&mapped));
        assert!(query::ip_forms(mapped).contains(&v4));
    }

    #[test]
    fn refuses_missing_foreign_and_newer_files() {
        let dir = std::env::temp_dir().join(format!("netstat-hist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("none.db");
        assert!(matches!(open_read(&missing), Err(HistoryError::Missing(_))));
        let text = dir.join("text.db");
        std::fs::write(&text, "hello, this is not a database at all, but it is long enough to have a header").unwrap();
        assert!(matches!(open_read(&text), Err(HistoryError::Foreign(..))), "{:?}", open_read(&text).err());
        let other = dir.join("other.db");
        Db::open(&other).unwrap().execute_batch("CREATE TABLE t(x);").unwrap();
        assert!(matches!(open_read(&other), Err(HistoryError::Foreign(..))));
        let ours = dir.join("ours.db");
        drop(open_write(&ours).unwrap());
        assert!(open_read(&ours).is_ok());
        Db::open(&ours).unwrap().execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'", []).unwrap();
        assert!(matches!(open_read(&ours), Err(HistoryError::Newer(_, 99))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
