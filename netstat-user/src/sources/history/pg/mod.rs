//! The fleet store: the same history in one PostgreSQL database that many
//! hosts record into. Each recorder writes its local SQLite store first
//! and forwards from it (`forward`), so nothing is lost while PostgreSQL is
//! away; every query of the local store also runs here (`query`), across
//! hosts or for one. This module owns the connection (a libpq-style URL,
//! `PGPASSWORD` or `~/.pgpass`, TLS when the server offers it) and the
//! schema, created and migrated by netstat itself under a version table and
//! partitioned by time so that retention drops whole partitions.
pub mod forward;
pub mod query;

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use postgres::{Client, NoTls};

use super::HistoryError;

/// The layout this build writes; a newer netstat reads and migrates every
/// older one, an older one refuses a newer database.
pub const SCHEMA_VERSION: i32 = 1;
/// Every session that creates, migrates or prunes holds this advisory lock
/// (in the transaction), so recorders starting together never race.
const DDL_LOCK: i64 = 0x6e65_7473_7461_7401;
/// `until_us` of a row still open: the open partition holds them.
pub const OPEN_UNTIL: i64 = i64::MAX;
const OPEN_FROM: i64 = 1 << 62;

/// Whether `--db` names a PostgreSQL database rather than a file.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://")
}

/// Where the fleet store is and how to reach it.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    tls: Tls,
    /// The URL with any password removed, for messages.
    pub shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PartialEq for Target {
    fn eq(&self, o: &Self) -> bool {
        self.shown == o.shown
    }
}
impl Eq for Target {}

#[derive(Clone)]
enum Tls {
    Off,
    /// prefer (the default) or require: encrypted when the server offers
    /// it (require: or fail), the certificate not checked, as libpq does
    /// without a root certificate.
    Any,
    /// verify-ca / verify-full: the server's certificate must chain to
    /// `sslrootcert` and name the host.
    Verify(PathBuf),
}

/// Remove `user:password@`'s password from a URL.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => {
            let auth = &rest[..at];
            let user = auth.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme_end], user, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

impl Target {
    /// Parse `postgresql://USER@HOST[:PORT]/DB[?sslmode=...]`; the password
    /// comes from the URL, else `PGPASSWORD`, else `~/.pgpass` (`PGPASSFILE`).
    pub fn parse(url: &str) -> Result<Target, String> {
        let shown = crate::escape::escape(&redact(url)).into_owned();
        // sslmode values tokio-postgres does not know, and sslrootcert, are
        // ours to handle.
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut mode = String::from("prefer");
        let mut root: Option<PathBuf> = None;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "sslmode" => mode = v.to_string(),
                "sslrootcert" => root = Some(PathBuf::from(percent_decode(v))),
                _ => kept.push(kv),
            }
        }
        let tls = match mode.as_str() {
            "disable" => Tls::Off,
            "allow" | "prefer" | "require" => Tls::Any,
            "verify-ca" | "verify-full" => Tls::Verify(root.clone().unwrap_or_else(|| home().join(".postgresql/root.crt"))),
            other => return Err(format!("{shown}: unknown sslmode '{}' (disable, prefer, require, verify-ca, verify-full)", crate::escape::escape(other))),
        };
        kept.push(match mode.as_str() {
            "disable" => "sslmode=disable",
            "require" | "verify-ca" | "verify-full" => "sslmode=require",
            _ => "sslmode=prefer",
        });
        let rebuilt = format!("{base}?{}", kept.join("&"));
        let mut config = postgres::Config::from_str(&rebuilt).map_err(|e| format!("{shown}: {e}"))?;
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER").ok().or_else(os_user).ok_or_else(|| format!("{shown}: no user in the URL, and none in PGUSER"))?;
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or_default().to_string();
            config.dbname(&user);
        }
        if config.get_password().is_none() {
            if let Some(pw) = std::env::var_os("PGPASSWORD") {
                config.password(pw.as_encoded_bytes());
            } else if let Some(pw) = pgpass(&config) {
                config.password(pw);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("netstat");
        Ok(Target { config, tls, shown })
    }

    /// One session (TLS as the URL asks).
    pub fn connect(&self) -> Result<Client, HistoryError> {
        let r = match &self.tls {
            Tls::Off => self.config.connect(NoTls),
            Tls::Any => self.config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(any_certificate())),
            Tls::Verify(root) => {
                let cfg = verified(root).map_err(|why| HistoryError::Pg(self.shown.clone(), why))?;
                self.config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
            }
        };
        r.map_err(|e| self.error(e))
    }

    pub fn error(&self, e: postgres::Error) -> HistoryError {
        HistoryError::Pg(self.shown.clone(), pg_message(&e))
    }
}

/// The whole of a PostgreSQL error on one line.
pub fn pg_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

fn os_user() -> Option<String> {
    let uid = unsafe { libc::geteuid() };
    std::fs::read_to_string("/etc/passwd").ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

/// The password `~/.pgpass` (or `PGPASSFILE`) gives for this host, port,
/// database and user: the first matching line, `*` matching anything, `\`
/// escaping `:` and `\`. Like libpq, a file others can read is ignored.
fn pgpass(config: &postgres::Config) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::var_os("PGPASSFILE").map(PathBuf::from).unwrap_or_else(|| home().join(".pgpass"));
    let meta = std::fs::metadata(&path).ok()?;
    if meta.mode() & 0o077 != 0 {
        eprintln!("netstat: {}: ignored, it is readable by others (chmod 0600 it)", crate::escape::escape(&path.display().to_string()));
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(_)) | None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let db = config.get_dbname().unwrap_or_default().to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    let want = [host, port, db, user];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields = pgpass_fields(line);
        if fields.len() < 5 {
            continue;
        }
        if fields[..4].iter().zip(&want).all(|(f, w)| f == "*" || f == w) {
            return Some(fields[4..].join(":").into_bytes());
        }
    }
    None
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push(n);
                }
            }
            ':' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS that encrypts without checking the certificate (sslmode prefer and
/// require, as libpq has them without a root certificate).
fn any_certificate() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth()
}

fn verified(root: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let shown = crate::escape::escape(&root.display().to_string()).into_owned();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(root).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    for c in certs {
        roots.add(c.map_err(|e| format!("sslrootcert {shown}: {e}"))?).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Version 1: every table in the `netstat` schema. A row's source is its
/// host and local store (`sources`); rows keep their local ids, so a
/// forward replayed after a failure replaces, never duplicates.
const SCHEMA_V1: &str = r#"
CREATE SCHEMA IF NOT EXISTS netstat;
CREATE TABLE netstat.schema_version(version integer NOT NULL, applied_us bigint NOT NULL, netstat text NOT NULL);
CREATE TABLE netstat.meta(key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE netstat.sources(
    id serial PRIMARY KEY,
    host text NOT NULL,
    store text NOT NULL,
    conns_seq bigint NOT NULL DEFAULT 0,
    conns_max bigint NOT NULL DEFAULT 0,
    procs bigint NOT NULL DEFAULT 0,
    places bigint NOT NULL DEFAULT 0,
    lost bigint NOT NULL DEFAULT 0,
    UNIQUE (host, store)
);
CREATE TABLE netstat.runs(
    src integer NOT NULL, id bigint NOT NULL,
    started_us bigint NOT NULL, heartbeat_us bigint NOT NULL, stopped_us bigint,
    boot_id text, pid bigint, version text,
    PRIMARY KEY (src, id)
);
CREATE TABLE netstat.lost(src integer NOT NULL, id bigint NOT NULL, at_us bigint NOT NULL, reason text NOT NULL, count bigint NOT NULL, PRIMARY KEY (src, id));
CREATE TABLE netstat.procs(
    src integer NOT NULL, id bigint NOT NULL,
    pid bigint NOT NULL, pid_start bigint, comm bytea NOT NULL, exe bytea, uid bigint,
    parent_pid bigint, parent_comm bytea, ns_pid bigint,
    PRIMARY KEY (src, id)
);
CREATE INDEX procs_pid ON netstat.procs(pid);
CREATE TABLE netstat.places(
    src integer NOT NULL, id bigint NOT NULL,
    netns bigint, cgroup_id bigint, cgroup bytea, unit text, runtime text, container text, container_name bytea, pod text,
    PRIMARY KEY (src, id)
);
CREATE TABLE netstat.conns(
    src integer NOT NULL,
    id bigint NOT NULL,
    flags integer NOT NULL,
    span smallint NOT NULL,
    opened bigint NOT NULL,
    until_us bigint NOT NULL,
    lived bigint, estab bigint, closing bigint,
    laddr inet, lport integer, raddr inet, rport integer,
    state smallint, "end" smallint NOT NULL,
    sent bigint, recv bigint,
    holder bigint, creator bigint, place bigint, cookie bigint
) PARTITION BY RANGE (until_us);
CREATE INDEX conns_src_id ON netstat.conns(src, id);
CREATE INDEX conns_time ON netstat.conns(span, opened);
CREATE INDEX conns_remote ON netstat.conns(raddr);
CREATE TABLE netstat.holders(src integer NOT NULL, conn bigint NOT NULL, since bigint NOT NULL, proc bigint);
CREATE INDEX holders_conn ON netstat.holders(src, conn);
"#;

/// What a session needs to know of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Each time partition covers this many µs of `until_us`.
    pub partition_us: i64,
}

/// The installed schema version, None when the database has no netstat
/// schema yet.
fn installed(c: &mut impl postgres::GenericClient) -> Result<Option<i32>, postgres::Error> {
    let present: Option<String> = c.query_one("SELECT to_regclass('netstat.schema_version')::text", &[])?.get(0);
    if present.is_none() {
        return Ok(None);
    }
    Ok(c.query_one("SELECT max(version) FROM netstat.schema_version", &[])?.get(0))
}

fn read_schema(c: &mut impl postgres::GenericClient, t: &Target) -> Result<Schema, HistoryError> {
    let w: Option<i64> = c
        .query_opt("SELECT value FROM netstat.meta WHERE key = 'partition_us'", &[])
        .map_err(|e| t.error(e))?
        .map(|r| r.get(0));
    Ok(Schema { partition_us: w.unwrap_or(86_400_000_000).max(1_000_000) })
}

/// Create or migrate the schema (the recorder): one transaction under the
/// DDL lock. A new database's partitions are a quarter of `retain_us`
/// wide (from 1 s to 1 day), so retention drops them whole.
pub fn migrate(client: &mut Client, t: &Target, retain_us: i64) -> Result<Schema, HistoryError> {
    let mut tx = client.transaction().map_err(|e| t.error(e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK]).map_err(|e| t.error(e))?;
    match installed(&mut tx).map_err(|e| t.error(e))? {
        None => {
            tx.batch_execute(SCHEMA_V1).map_err(|e| t.error(e))?;
            let width = (retain_us / 4).clamp(1_000_000, 86_400_000_000) / 1_000_000 * 1_000_000;
            tx.execute(
                "INSERT INTO netstat.schema_version(version, applied_us, netstat) VALUES ($1, $2, $3)",
                &[&SCHEMA_VERSION, &super::now_us(), &env!("CARGO_PKG_VERSION")],
            )
            .map_err(|e| t.error(e))?;
            tx.execute("INSERT INTO netstat.meta(key, value) VALUES ('partition_us', $1)", &[&width]).map_err(|e| t.error(e))?;
            tx.batch_execute(&format!("CREATE TABLE netstat.conns_open PARTITION OF netstat.conns FOR VALUES FROM ({OPEN_FROM}) TO (MAXVALUE)"))
                .map_err(|e| t.error(e))?;
        }
        Some(v) if v > SCHEMA_VERSION => return Err(HistoryError::PgNewer(t.shown.clone(), v as i64)),
        // Migrations from older versions go here, one step each.
        Some(_) => {}
    }
    let schema = read_schema(&mut tx, t)?;
    tx.commit().map_err(|e| t.error(e))?;
    Ok(schema)
}

/// Open for reading (every query): the schema must be there, of a version
/// this build reads.
pub fn open_read(t: &Target) -> Result<(Client, Schema), HistoryError> {
    let mut c = t.connect()?;
    match installed(&mut c).map_err(|e| t.error(e))? {
        None => Err(HistoryError::PgEmpty(t.shown.clone())),
        Some(v) if v > SCHEMA_VERSION => Err(HistoryError::PgNewer(t.shown.clone(), v as i64)),
        Some(_) => {
            let s = read_schema(&mut c, t)?;
            Ok((c, s))
        }
    }
}

/// The partition holding `until_us`, created when missing (under the DDL
/// lock, in the caller's transaction). Returns its index.
pub fn partition_index(until_us: i64, s: &Schema) -> Option<i64> {
    (until_us < OPEN_FROM).then(|| until_us.div_euclid(s.partition_us))
}

pub fn ensure_partitions(tx: &mut postgres::Transaction<'_>, s: &Schema, indexes: &[i64]) -> Result<(), postgres::Error> {
    if indexes.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
    for &i in indexes {
        let name = partition_name(i);
        let (from, to) = (i * s.partition_us, (i + 1) * s.partition_us);
        tx.batch_execute(&format!("CREATE TABLE IF NOT EXISTS netstat.{name} PARTITION OF netstat.conns FOR VALUES FROM ({from}) TO ({to})"))?;
    }
    Ok(())
}

fn partition_name(i: i64) -> String {
    if i < 0 { format!("conns_m{}", -i) } else { format!("conns_p{i}") }
}

/// Retention: drop every partition whose rows all stopped being listed
/// before `horizon`, and this source's runs and lost events before it.
/// Returns the partitions dropped.
pub fn prune(client: &mut Client, s: &Schema, src: i32, horizon: i64) -> Result<usize, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
    let names: Vec<String> = tx
        .query("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'netstat.conns'::regclass", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut dropped = 0;
    let mut before = None;
    for n in names {
        let idx = if let Some(p) = n.strip_prefix("conns_p") {
            p.parse::<i64>().ok()
        } else {
            n.strip_prefix("conns_m").and_then(|m| m.parse::<i64>().ok()).map(|m| -m)
        };
        let Some(idx) = idx else { continue };
        let end = (idx + 1) * s.partition_us;
        if end <= horizon {
            tx.batch_execute(&format!("DROP TABLE netstat.{n}"))?;
            dropped += 1;
            before = before.max(Some(end));
        }
    }
    if let Some(b) = before {
        tx.execute(
            "INSERT INTO netstat.meta(key, value) VALUES ('pruned_before_us', $1) ON CONFLICT (key) DO UPDATE SET value = greatest(netstat.meta.value, excluded.value)",
            &[&b],
        )?;
        tx.execute(
            "DELETE FROM netstat.holders h WHERE NOT EXISTS (SELECT 1 FROM netstat.conns c WHERE c.src = h.src AND c.id = h.conn)",
            &[],
        )?;
    }
    tx.execute("DELETE FROM netstat.lost WHERE src = $1 AND at_us < $2", &[&src, &horizon])?;
    tx.execute(
        "DELETE FROM netstat.runs WHERE src = $1 AND coalesce(stopped_us, heartbeat_us) < $2 AND id < (SELECT max(id) FROM netstat.runs WHERE src = $1)",
        &[&src, &horizon],
    )?;
    tx.commit()?;
    Ok(dropped)
}

/// This machine's host name (`--host-name`'s default).
pub fn host_name(proc_root: &std::path::Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/hostname")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(redact("postgresql://u:secret@db:5432/x"), "postgresql://u@db:5432/x");
        assert_eq!(redact("postgresql://u@db/x?sslmode=require"), "postgresql://u@db/x?sslmode=require");
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }

    #[test]
    fn pgpass_lines_split_on_unescaped_colons() {
        assert_eq!(pgpass_fields(r"h:5432:*:u:p\:w\\d"), vec!["h", "5432", "*", "u", r"p:w\d"]);
    }

    #[test]
    fn a_url_parses_with_our_ssl_options_and_refuses_bad_ones() {
        let t = Target::parse("postgresql://u:pw@127.0.0.1:5999/fleet?sslmode=verify-full&sslrootcert=/x/ca.pem").unwrap();
        assert!(matches!(t.tls, Tls::Verify(ref p) if p == std::path::Path::new("/x/ca.pem")));
        assert_eq!(t.config.get_dbname(), Some("fleet"));
        assert_eq!(t.config.get_ports(), &[5999]);
        assert!(Target::parse("postgresql://u@h/x?sslmode=sometimes").is_err());
        assert!(Target::parse("postgresql://u@h:notaport/x").is_err());
    }

    #[test]
    fn partitions_cover_time_and_leave_the_open_rows_apart() {
        let s = Schema { partition_us: 1_000_000 };
        assert_eq!(partition_index(2_500_000, &s), Some(2));
        assert_eq!(partition_index(-1, &s), Some(-1));
        assert_eq!(partition_index(OPEN_UNTIL, &s), None);
        assert_eq!(partition_name(-3), "conns_m3");
    }
}
