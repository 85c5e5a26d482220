//! A real PostgreSQL 15 server for the tests of issue 12 (ownership follows
//! the socket): the postmaster accepts every connection and forks a backend
//! that holds and closes it. Owns a throwaway cluster in a temporary
//! directory and always tears it down (Drop, also on a panic); it must not
//! touch any other cluster or any process it did not start.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Debian's PostgreSQL 15 (package postgresql-15; `cargo xtask test`
/// installs it).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// One running server on 127.0.0.1, its cluster in a directory of its own.
pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
    /// The postmaster: it listens and accepts; each session is a child.
    pub postmaster_pid: u32,
    bench_ready: std::cell::Cell<bool>,
}

fn bin(name: &str) -> String {
    format!("{PG_BIN}/{name}")
}

/// `runuser -u postgres -- PROG ARGS` (initdb and postgres refuse root).
fn as_postgres(prog: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", prog]);
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// The PPid field of /proc/PID/status.
fn ppid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok())
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| ppid_of(pid) == Some(parent))
        .collect()
}

impl Postgres {
    /// initdb, then `pg_ctl -w start` on a free loopback port. Panics with
    /// the tool's output and the server log when either fails, and with one
    /// clear line when PostgreSQL is not installed.
    pub fn start() -> Postgres {
        let missing: Vec<&str> =
            ["initdb", "pg_ctl", "postgres", "pgbench", "psql"].into_iter().filter(|b| !Path::new(&bin(b)).exists()).collect();
        assert!(
            missing.is_empty(),
            "PostgreSQL 15 is not installed: {missing:?} missing from {PG_BIN} (apt-get install postgresql-15; `cargo xtask test` does it)"
        );
        let (uid, gid) = {
            let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
            assert!(!pw.is_null(), "no `postgres` system user (the postgresql-15 package makes it)");
            unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
        };
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("netstat-pg-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // From here on Drop cleans up whatever was made.
        let mut pg = Postgres { dir, port: 0, postmaster_pid: 0, bench_ready: false.into() };
        std::os::unix::fs::chown(&pg.dir, Some(uid), Some(gid)).expect("chown the cluster directory to postgres");
        let data = pg.data();
        let out = as_postgres(&bin("initdb"))
            .args(["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            .current_dir(&pg.dir)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A port picked free may be taken before the server binds it: retry.
        for attempt in 1..=3 {
            pg.port = free_port();
            let conf = format!(
                "\n# netstat tests\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n\
                 shared_buffers = 32MB\nautovacuum = off\n",
                pg.port,
                pg.dir.display()
            );
            let mut f = std::fs::OpenOptions::new().append(true).open(format!("{data}/postgresql.conf")).expect("open postgresql.conf");
            f.write_all(conf.as_bytes()).unwrap();
            let out = as_postgres(&bin("pg_ctl"))
                .args(["-D", &data, "-l", &pg.log_path(), "-w", "-t", "30", "start"])
                .current_dir(&pg.dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                break;
            }
            let log = pg.log();
            if attempt < 3 && log.contains("could not bind") {
                continue;
            }
            panic!(
                "pg_ctl start failed ({}):\n{}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pidfile = std::fs::read_to_string(format!("{data}/postmaster.pid")).expect("read postmaster.pid");
        pg.postmaster_pid = pidfile.lines().next().and_then(|l| l.trim().parse().ok()).expect("a PID on postmaster.pid's first line");
        pg
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.display())
    }

    fn log_path(&self) -> String {
        format!("{}/server.log", self.dir.display())
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no server log: {e})"))
    }

    /// libpq's connection options: TCP to our port, never the unix socket.
    fn conn_args(&self) -> Vec<String> {
        ["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"].map(String::from).to_vec()
    }

    /// netstat's `--db` for this server (TCP, user postgres, database postgres).
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `psql -At -c SQL` (checked): its output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(bin("psql"))
            .args(self.conn_args())
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", sql])
            .env_remove("PGSERVICE")
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `psql`'s one number.
    pub fn count(&self, sql: &str) -> u64 {
        let v = self.psql(sql);
        v.parse().unwrap_or_else(|_| panic!("psql {sql}: not a number: {v}"))
    }

    /// `pg_ctl stop -m fast`: every session is cut, the port closes.
    pub fn stop(&self) {
        let st = as_postgres(&bin("pg_ctl"))
            .args(["-D", &self.data(), "-m", "fast", "-w", "-t", "30", "stop"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl stop");
        assert!(st.success(), "pg_ctl stop: {st}\nserver log:\n{}", self.log());
    }

    /// Start the stopped server again on the same port.
    pub fn start_again(&mut self) {
        let out = as_postgres(&bin("pg_ctl"))
            .args(["-D", &self.data(), "-l", &self.log_path(), "-w", "-t", "30", "start"])
            .current_dir(&self.dir)
            .output()
            .expect("run pg_ctl start");
        assert!(out.status.success(), "pg_ctl start again: {}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        let pidfile = std::fs::read_to_string(format!("{}/postmaster.pid", self.data())).expect("read postmaster.pid");
        self.postmaster_pid = pidfile.lines().next().and_then(|l| l.trim().parse().ok()).expect("a PID in postmaster.pid");
    }

    /// Turn TLS on: a certificate for IP 127.0.0.1 signed by a CA of its
    /// own (openssl); returns the CA certificate's path (a client's root).
    pub fn enable_tls(&mut self) -> PathBuf {
        let ca = make_ca(&self.dir, "ca");
        let (crt, key, csr, ext) = (self.dir.join("server.crt"), self.dir.join("server.key"), self.dir.join("server.csr"), self.dir.join("server.ext"));
        std::fs::write(&ext, "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
        openssl(&["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", p(&key), "-out", p(&csr)]);
        openssl(&[
            "x509", "-req", "-in", p(&csr), "-CA", p(&ca), "-CAkey", p(&self.dir.join("ca.key")), "-CAcreateserial", "-days", "2", "-extfile", p(&ext), "-out", p(&crt),
        ]);
        let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        for f in [&crt, &key] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conf = format!("\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n", crt.display(), key.display());
        std::fs::OpenOptions::new().append(true).open(format!("{}/postgresql.conf", self.data())).unwrap().write_all(conf.as_bytes()).unwrap();
        self.stop();
        self.start_again();
        ca
    }

    /// A role that must give its password (scram over TCP), for the
    /// PGPASSWORD and ~/.pgpass tests.
    pub fn add_password_role(&self, role: &str, password: &str) {
        self.psql(&format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"));
        let hba = format!("{}/pg_hba.conf", self.data());
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}")).unwrap();
        self.psql("SELECT pg_reload_conf()");
        std::thread::sleep(Duration::from_millis(300));
    }

    /// `pgbench ARGS` against the server (after one `pgbench -i`), checked:
    /// any failed connection or transaction panics with pgbench's output
    /// and the server log.
    pub fn pgbench(&self, args: &[&str]) -> Bench {
        self.pgbench_init();
        let out = self.run_pgbench(args);
        let transactions = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("pgbench {args:?} printed no transaction count:\n{out}"));
        let failed = out
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        assert_eq!(failed, 0, "pgbench {args:?}: {failed} failed transactions:\n{out}\nserver log:\n{}", self.log());
        Bench { transactions, output: out }
    }

    /// `pgbench -i` once (a test calls it before it starts watching, so
    /// the setup's connection stays out of its window).
    pub fn pgbench_init(&self) {
        if !self.bench_ready.get() {
            self.run_pgbench(&["-i", "-s", "1", "-q"]);
            self.bench_ready.set(true);
        }
    }

    fn run_pgbench(&self, args: &[&str]) -> String {
        let out = Command::new(bin("pgbench"))
            .args(self.conn_args())
            .args(args)
            .arg("postgres")
            .env_remove("PGSERVICE")
            .output()
            .expect("run pgbench");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // pgbench exits 2 when a client lost its connection mid-run and
        // prints `pgbench: error:` for every connection it could not make.
        let bad = !out.status.success() || stderr.contains("error:") || stderr.contains("FATAL");
        assert!(!bad, "pgbench {args:?} failed ({}):\n{stdout}{stderr}\nserver log:\n{}", out.status, self.log());
        format!("{stdout}{stderr}")
    }

    /// `n` real, idle PostgreSQL sessions (one psql each, so one backend
    /// process each), connected when this returns; each knows its backend
    /// PID and client port as the server itself reports them.
    pub fn hold(&self, n: usize) -> Vec<Session> {
        let mut sessions = Vec::with_capacity(n);
        for i in 0..n {
            let mut child = Command::new(bin("psql"))
                .args(self.conn_args())
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres"])
                .env("PGAPPNAME", format!("netstat-hold-{i}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn psql");
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "select pg_backend_pid(), inet_client_port();").expect("write to psql");
            let out = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let reply = rx.recv_timeout(Duration::from_secs(10));
            let parsed = reply.as_ref().ok().and_then(|l| {
                let (pid, port) = l.split_once('|')?;
                Some((pid.trim().parse().ok()?, port.trim().parse().ok()?))
            });
            let Some((backend_pid, client_port)) = parsed else {
                let _ = child.kill();
                let err = child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
                panic!("psql session {i} did not report its backend ({reply:?}): {err}\nserver log:\n{}", self.log());
            };
            assert_eq!(
                ppid_of(backend_pid),
                Some(self.postmaster_pid),
                "session {i}'s backend {backend_pid} is not a child of the postmaster {}",
                self.postmaster_pid
            );
            sessions.push(Session { child, stdin: Some(stdin), backend_pid, client_port });
        }
        sessions
    }
}

/// What one pgbench run did.
pub struct Bench {
    /// With `-C`, also the number of connections it made.
    pub transactions: u64,
    pub output: String,
}

/// One idle psql session and its backend.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    pub backend_pid: u32,
    /// The psql end's port on 127.0.0.1.
    pub client_port: u16,
}

impl Session {
    /// End of input: psql sends Terminate and exits, its backend with it.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drop kills it.
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A server may be up even where start() panicked (pg_ctl timed
        // out): postmaster.pid says so.
        let pidfile = std::fs::read_to_string(format!("{}/postmaster.pid", self.data())).ok();
        if let Some(pid) = pidfile.as_deref().and_then(|f| f.lines().next()?.trim().parse::<u32>().ok()) {
            let children = children_of(pid);
            let stopped = as_postgres(&bin("pg_ctl"))
                .args(["-D", &self.data(), "-m", "immediate", "-w", "-t", "10", "stop"])
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            // pg_ctl returns once postmaster.pid is gone, a moment before
            // the postmaster itself; if it gave up, or the process stays,
            // kill what this server started, by PID.
            let gone = || !Path::new(&format!("/proc/{pid}")).exists();
            let deadline = Instant::now() + Duration::from_secs(5);
            while stopped && !gone() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !gone() {
                for pid in std::iter::once(pid).chain(children) {
                    // Still a postgres process, not a PID reused since.
                    if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `openssl ARGS`, checked.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate authority in `dir` (NAME.crt, NAME.key); its certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN=netstat test {name}"), "-keyout", p(&key), "-out", p(&crt)]);
    crt
}
