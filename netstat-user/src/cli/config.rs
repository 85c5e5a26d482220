//! The validated configuration every layer below the CLI works from.
use std::path::PathBuf;

pub const DEFAULT_RING_SIZE: u32 = 8 << 20;
/// --record's ring unless --ring-size says otherwise.
pub const RECORD_RING_SIZE: u32 = 32 << 20;
pub const DEFAULT_OWNER_MAP_SIZE: u32 = 262_144;
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The connection table (default, -a, -o, -b, -n, -f, -t, -p).
    Connections,
    /// -r, -s, -e (any combination).
    Info { route: bool, statistics: bool, ethernet: bool },
    /// --stream
    Stream,
    /// --record: the history recorder.
    Record,
    /// --history: recorded connection lifetimes.
    History,
    /// --probe-report
    ProbeReport,
    /// --version
    Version,
    /// --generate KIND: the man page or a shell's completions.
    Generate(super::generate::Artifact),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    Both,
}

impl Family {
    pub fn v4(self) -> bool {
        matches!(self, Family::V4 | Family::Both)
    }
    pub fn v6(self) -> bool {
        matches!(self, Family::V6 | Family::Both)
    }
}

/// Which protocols -p (or --tcp/--udp) selects for the connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoFilter {
    pub tcp: bool,
    pub udp: bool,
    /// Set by -p (tcp/udp mean IPv4, tcpv6/udpv6 IPv6, as in netstat).
    pub family: Option<Family>,
}

impl Default for ProtoFilter {
    fn default() -> Self {
        ProtoFilter { tcp: true, udp: true, family: None }
    }
}

impl ProtoFilter {
    pub fn narrow_family(&self, f: Family) -> Family {
        match (self.family, f) {
            (None, f) => f,
            (Some(p), Family::Both) => p,
            (Some(p), f) if p == f => f,
            // -p tcpv6 -4: nothing matches; keep the -p choice.
            (Some(p), _) => p,
        }
    }
}

/// -p with -s narrows the statistics to one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsProto {
    Tcp,
    Udp,
    TcpV6,
    UdpV6,
    Ip,
    IpV6,
    Icmp,
    IcmpV6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Tracepoint,
    Fentry,
    Kprobe,
}

impl Config {
    /// Does `--pid` let through a row or event whose owner has this PID?
    pub fn pid_matches(&self, owner_pid: Option<u32>) -> bool {
        self.pid.is_none_or(|p| owner_pid == Some(p))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub all: bool,
    pub listening_only: bool,
    pub numeric: bool,
    pub fqdn: bool,
    pub owner: bool,
    pub executable: bool,
    pub verbose: bool,
    pub offload: bool,
    pub proto: ProtoFilter,
    pub stats_proto: Option<StatsProto>,
    pub family: Family,
    pub json: bool,
    pub interval: Option<u64>,
    /// --delta: -e/-s displays after the first show each counter's change.
    pub delta: bool,
    pub backend: Backend,
    pub ring_size: u32,
    pub owner_map_size: u32,
    pub max_rows: usize,
    pub fail_on_loss: bool,
    pub count: u64,
    pub duration: u64,
    pub trace: bool,
    /// --pid: only this process's connections and events.
    pub pid: Option<u32>,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    /// Where container runtimes keep their state (`/`), for names.
    pub runtime_root: PathBuf,
    /// --all-namespaces: every network namespace, not only ours.
    pub all_namespaces: bool,
    /// --db, --retain, --max-db-size (--record, --history, --at).
    pub record: RecordOptions,
    /// --history's selection (and --at's address, port, process filters).
    pub query: crate::sources::history::query::Filter,
    /// --at TIME: the table as it was then (unix µs).
    pub at: Option<i64>,
}

/// Where the history is kept and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOptions {
    /// The SQLite store: the history itself, or with `pg` the local store
    /// the recorder writes first and forwards from.
    pub db: PathBuf,
    pub retain_us: i64,
    pub max_db_bytes: Option<u64>,
    /// `--db postgresql://...`: the fleet store.
    pub pg: Option<crate::sources::history::pg::Target>,
    /// The name this host records under in the fleet store.
    pub host_name: String,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            db: PathBuf::from(crate::sources::history::DEFAULT_DB),
            retain_us: 7 * 86_400 * 1_000_000,
            max_db_bytes: None,
            pg: None,
            host_name: String::new(),
        }
    }
}
