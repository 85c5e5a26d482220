//! The history tests' common parts (issues 16 and 17): a scratch
//! directory, where a test records and queries (SQLite, or a real
//! PostgreSQL with the recorder's local store), a running recorder, and
//! the witnesses' readers.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::*;

/// A scratch directory, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("netstat-history-{tag}-{}", name("h")));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub fn db(&self) -> PathBuf {
        self.0.join("history.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a test records and queries: a local SQLite file, or a real
/// PostgreSQL server (issue 17) with the recorder's local store beside it
/// and one host's name. The same test runs against both.
#[derive(Clone)]
pub enum Store {
    Sqlite(PathBuf),
    Pg { url: String, local: PathBuf, host: String },
}

impl Store {
    pub fn sqlite(dir: &Dir) -> Store {
        Store::Sqlite(dir.db())
    }
    pub fn pg(pg: &super::postgres::Postgres, dir: &Dir, host: &str) -> Store {
        Store::Pg { url: pg.url(), local: dir.0.join(format!("{host}.db")), host: host.to_string() }
    }
    /// The SQLite file the recorder writes (the local store, for PostgreSQL).
    pub fn file(&self) -> &Path {
        match self {
            Store::Sqlite(p) => p,
            Store::Pg { local, .. } => local,
        }
    }
    pub fn record_args(&self) -> Vec<String> {
        match self {
            Store::Sqlite(p) => vec!["--db".into(), p.display().to_string()],
            Store::Pg { url, local, host } => {
                vec!["--db".into(), url.clone(), "--local-db".into(), local.display().to_string(), "--host-name".into(), host.clone()]
            }
        }
    }
    pub fn query_args(&self) -> Vec<String> {
        match self {
            Store::Sqlite(p) => vec!["--db".into(), p.display().to_string()],
            Store::Pg { url, host, .. } => vec!["--db".into(), url.clone(), "--host".into(), host.clone()],
        }
    }
}

/// `base` then the store's query arguments then `extra`.
pub fn with_store<'a>(base: &[&'a str], store: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().copied().chain(store.iter().map(String::as_str)).chain(extra.iter().copied()).collect()
}

/// A running `netstat --record`.
pub struct Recorder {
    pub child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Recorder {
    pub fn start(store: &Store, extra: &[&str]) -> Recorder {
        let mut c = Command::new(netstat_bin());
        c.args(["--record", "--backend", &backend()]).args(store.record_args()).args(extra);
        let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn netstat --record");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("recording into") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut r = Recorder { child, stderr: Some(stderr) };
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = r.child.kill();
            let _ = r.child.wait();
            panic!("the recorder did not start: {}", r.stderr.take().unwrap().join().unwrap());
        }
        r
    }

    /// SIGINT, wait; its stderr.
    pub fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let st = self.child.wait().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        assert!(st.success(), "the recorder failed ({st}): {err}");
        err
    }

    pub fn kill(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = self.stderr.take().unwrap().join();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run netstat; (status code, stdout, stderr).
pub fn netstat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(netstat_bin()).args(args).env("TZ", "UTC").output().expect("run netstat");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

pub fn history_json(store: &Store, extra: &[&str]) -> Value {
    let q = store.query_args();
    let args = with_store(&["--history", "--json"], &q, extra);
    let (code, out, err) = netstat(&args);
    assert_eq!(code, 0, "netstat {args:?}: {err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    super::schema::check(&doc, "history_document");
    doc
}

/// What python3's sqlite3 answers to `query` (one value) over `db`.
pub fn sqlite(db: &Path, query: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; d=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(d.execute(sys.argv[2], [a.encode() for a in sys.argv[3:]]).fetchone()[0])",
        ])
        .arg(db)
        .arg(query)
        .args(args)
        .output()
        .expect("python3");
    assert!(out.status.success(), "sqlite3 {query}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

