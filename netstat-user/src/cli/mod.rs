//! Raw command-line flags (clap derive) and their validation into `Config`.
//! Owns the option set and its error messages; knows nothing of sockets.
pub mod config;
pub mod generate;
pub mod nettools;

use clap::Parser;

use self::config::{Config, Family, Mode, ProtoFilter, StatsProto};

/// Exit code for bad input.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser, Default)]
#[command(
    name = "netstat",
    about = "Network connections, routes and statistics, with every connection's process traced in the kernel (eBPF).",
    after_help = "INTERVAL redisplays the output every INTERVAL seconds until Ctrl+C.\n\
With tracing available, connections that opened and closed between two displays are listed too.",
    disable_version_flag = true
)]
pub struct Cli {
    /// Show all connections and listening ports (TCP listeners and UDP endpoints)
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Show the executable behind each connection or listener
    #[arg(short = 'b', long = "executable")]
    pub executable: bool,
    /// Show interface statistics (Ethernet statistics)
    #[arg(short = 'e', long = "ethernet")]
    pub ethernet: bool,
    /// Show fully qualified domain names for foreign addresses
    #[arg(short = 'f', long = "fqdn")]
    pub fqdn: bool,
    /// Show addresses and ports numerically
    #[arg(short = 'n', long = "numeric")]
    pub numeric: bool,
    /// Show the owning process ID of each connection
    #[arg(short = 'o', long = "owner")]
    pub owner: bool,
    /// Only this protocol: TCP, UDP, TCPv6, UDPv6; with -s also IP, IPv6, ICMP, ICMPv6
    #[arg(short = 'p', long = "proto", value_name = "PROTO")]
    pub proto: Option<String>,
    /// Show the routing table
    #[arg(short = 'r', long = "route")]
    pub route: bool,
    /// Show per-protocol statistics
    #[arg(short = 's', long = "statistics")]
    pub statistics: bool,
    /// Show the offload state of each connection
    #[arg(short = 't', long = "offload")]
    pub offload: bool,
    /// Verbose: with -b, full executable paths
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// TCP only (Linux habit)
    #[arg(long = "tcp")]
    pub tcp: bool,
    /// UDP only (Linux habit)
    #[arg(long = "udp")]
    pub udp: bool,
    /// Listening sockets only (Linux habit)
    #[arg(long = "listening")]
    pub listening: bool,
    /// IPv4 only
    #[arg(short = '4', long = "ipv4")]
    pub ipv4: bool,
    /// IPv6 only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// JSON output (every mode)
    #[arg(long = "json")]
    pub json: bool,
    /// Stream kernel events (TCP state changes, accepts, UDP bind/connect/close) as they happen
    #[arg(long = "stream")]
    pub stream: bool,
    /// Print, for each kernel hook, the mechanism used or why it was skipped, then exit
    #[arg(long = "probe-report")]
    pub probe_report: bool,
    /// Kernel probe backend: auto, tracepoint (tracepoints + cgroup hooks), fentry, kprobe
    #[arg(long = "backend", value_name = "BACKEND", default_value = "auto")]
    pub backend: String,
    /// Ring buffer size in bytes (power of two, at least one page; --record takes 32 MiB unless given another)
    #[arg(long = "ring-size", value_name = "BYTES", default_value_t = self::config::DEFAULT_RING_SIZE)]
    pub ring_size: u32,
    /// Capacity of the kernel's socket-owner map
    #[arg(long = "owner-map-size", value_name = "N", default_value_t = self::config::DEFAULT_OWNER_MAP_SIZE)]
    pub owner_map_size: u32,
    /// Cap on rows held by the live connection table
    #[arg(long = "max-rows", value_name = "N", default_value_t = self::config::DEFAULT_MAX_ROWS)]
    pub max_rows: usize,
    /// With --stream: exit with status 3 if any kernel event was lost
    #[arg(long = "fail-on-loss")]
    pub fail_on_loss: bool,
    /// With --stream: stop after this many events (0 = unlimited)
    #[arg(long = "count", value_name = "N", default_value_t = 0)]
    pub count: u64,
    /// With --stream: stop after this many seconds (0 = until Ctrl+C)
    #[arg(long = "duration", value_name = "SECS", default_value_t = 0)]
    pub duration: u64,
    /// With INTERVAL and -e or -s: each display after the first shows every counter's change and the interval's error share
    #[arg(long = "delta")]
    pub delta: bool,
    /// Do not trace: snapshots only
    #[arg(long = "no-trace")]
    pub no_trace: bool,
    /// Only this process's connections (displays, INTERVAL, --stream)
    #[arg(long = "pid", value_name = "PID")]
    pub pid: Option<u32>,
    /// Every network namespace on the host, not only netstat's own (needs CAP_SYS_ADMIN to enter them); the table adds a Namespace column
    #[arg(long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Record every connection's lifetime (and its owner) into the history database until Ctrl+C or --duration
    #[arg(long = "record")]
    pub record: bool,
    /// List recorded connection lifetimes, oldest first, then the gaps in the record (filters: --since, --until, --remote, --local, --port, --pid, --comm, --unit, -p)
    #[arg(long = "history")]
    pub history: bool,
    /// Show the connection table as it was at TIME, from the history (with -a, -n, -o, -b, -p, --json)
    #[arg(long = "at", value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,
    /// History database for --record, --history and --at: a file (SQLite), or postgresql://USER@HOST[:PORT]/DB for a fleet's (password from PGPASSWORD or ~/.pgpass; sslmode=disable, prefer (default), require, verify-full with sslrootcert=FILE)
    #[arg(long = "db", value_name = "PATH|URL", default_value = crate::sources::history::DEFAULT_DB)]
    pub db: std::path::PathBuf,
    /// --record with a PostgreSQL --db: the local store written first and forwarded from (it keeps the record while PostgreSQL is away)
    #[arg(long = "local-db", value_name = "PATH")]
    pub local_db: Option<std::path::PathBuf>,
    /// --record with a PostgreSQL --db: the name this host records under (default: its host name)
    #[arg(long = "host-name", value_name = "NAME")]
    pub host_name: Option<String>,
    /// --history, --at with a PostgreSQL --db: only this host's record (--history without it: every host, with a Host column; --at without it: this host's)
    #[arg(long = "host", value_name = "NAME")]
    pub host: Option<String>,
    /// --history: lifetimes that were open at or after TIME (RFC 3339, 'YYYY-MM-DD HH:MM[:SS]' in local time, or relative: -10m, -2h, -1d)
    #[arg(long = "since", value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// --history: lifetimes that opened at or before TIME
    #[arg(long = "until", value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// --history, --at: only connections with this foreign address (and port)
    #[arg(long = "remote", value_name = "ADDR[:PORT]")]
    pub remote: Option<String>,
    /// --history, --at: only connections with this local address (and port)
    #[arg(long = "local", value_name = "ADDR[:PORT]")]
    pub local: Option<String>,
    /// --history, --at: only connections with this local or foreign port
    #[arg(long = "port", value_name = "N")]
    pub port: Option<u16>,
    /// --history, --at: only connections this process name held or created
    #[arg(long = "comm", value_name = "NAME")]
    pub comm: Option<String>,
    /// --history, --at: only connections of this systemd unit (nginx.service)
    #[arg(long = "unit", value_name = "NAME")]
    pub unit: Option<String>,
    /// --record: keep this long (N followed by s, m, h, d or w), pruning the oldest first
    #[arg(long = "retain", value_name = "DURATION", default_value = "7d")]
    pub retain: String,
    /// --record: keep the database under this size (bytes, or with K, M, G), pruning the oldest first
    #[arg(long = "max-db-size", value_name = "BYTES")]
    pub max_db_size: Option<String>,
    /// Print the version, git revision and the kernel features found, then exit
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Print the man page (man) or completions (bash, zsh, fish), for packaging
    #[arg(long = "generate", value_name = "KIND", hide = true)]
    pub generate: Option<String>,
    /// Root of the proc filesystem (for tests)
    #[arg(long = "proc-root", value_name = "DIR", default_value = "/proc", hide = true)]
    pub proc_root: std::path::PathBuf,
    /// Root of sysfs (for tests)
    #[arg(long = "sys-root", value_name = "DIR", default_value = "/sys", hide = true)]
    pub sys_root: std::path::PathBuf,
    /// Root under which the container runtimes' state is read, for container names (for tests)
    #[arg(long = "runtime-root", value_name = "DIR", default_value = "/", hide = true)]
    pub runtime_root: std::path::PathBuf,
    /// Redisplay every INTERVAL seconds
    #[arg(value_name = "INTERVAL")]
    pub interval: Option<String>,
}

/// argv (program name first) → a `Config`, or help text to print with exit
/// 0 (`Ok(Err(text))`), or one usage line. When our parse fails and the
/// line is net-tools `netstat` syntax, the usage line names its equivalent
/// here instead.
pub fn config_from_args(args: &[std::ffi::OsString]) -> Result<Result<Config, String>, UsageError> {
    let res = match Cli::parse_args(args.iter().cloned()) {
        Ok(Ok(cli)) => cli.into_config().map(Ok),
        Ok(Err(help)) => Ok(Err(help)),
        Err(e) => Err(e),
    };
    res.map_err(|e| {
        let rest: Option<Vec<String>> = args.iter().skip(1).map(|a| a.to_str().map(str::to_string)).collect();
        rest.and_then(|r| nettools::hint(&r)).map(UsageError).unwrap_or(e)
    })
}

/// A usage error: one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Cli {
    /// Parse argv. `Ok(Err(text))` is help text to print with exit 0.
    pub fn parse_args<I, T>(args: I) -> Result<Result<Cli, String>, UsageError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Cli::try_parse_from(args) {
            Ok(c) => Ok(Ok(c)),
            Err(e) => match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Ok(Err(e.render().to_string()))
                }
                _ => {
                    let text = e.render().to_string();
                    let first = text
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid arguments")
                        .trim_start_matches("error: ")
                        .to_string();
                    Err(UsageError(format!("{first} (try 'netstat --help')")))
                }
            },
        }
    }

    /// Validate into a `Config`.
    pub fn into_config(self) -> Result<Config, UsageError> {
        let interval = match &self.interval {
            None => None,
            Some(s) => match s.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(UsageError(format!(
                        "invalid interval '{}': INTERVAL must be a positive whole number of seconds",
                        crate::escape::escape(s)
                    )));
                }
            },
        };
        let (proto, stats_proto) = match &self.proto {
            None => (ProtoFilter::default(), None),
            Some(p) => parse_proto(p, self.statistics)?,
        };
        let mut proto = proto;
        if self.tcp && !self.udp {
            proto.udp = false;
        }
        if self.udp && !self.tcp {
            proto.tcp = false;
        }
        let family = match (self.ipv4, self.ipv6) {
            (true, false) => Family::V4,
            (false, true) => Family::V6,
            _ => Family::Both,
        };
        let family = proto.narrow_family(family);
        let backend = match self.backend.to_ascii_lowercase().as_str() {
            "auto" => self::config::Backend::Auto,
            "tracepoint" => self::config::Backend::Tracepoint,
            "fentry" => self::config::Backend::Fentry,
            "kprobe" => self::config::Backend::Kprobe,
            other => {
                return Err(UsageError(format!(
                    "invalid --backend '{}': expected auto, tracepoint, fentry or kprobe",
                    crate::escape::escape(other)
                )));
            }
        };
        if self.ring_size < 4096 || !self.ring_size.is_power_of_two() {
            return Err(UsageError(format!(
                "invalid --ring-size {}: must be a power of two of at least 4096 bytes",
                self.ring_size
            )));
        }
        if self.owner_map_size == 0 {
            return Err(UsageError("invalid --owner-map-size 0: must be at least 1".into()));
        }
        if self.max_rows == 0 {
            return Err(UsageError("invalid --max-rows 0: must be at least 1".into()));
        }
        let generate = match self.generate.as_deref() {
            None => None,
            Some(k) => Some(generate::Artifact::parse(k).ok_or_else(|| {
                UsageError(format!("invalid --generate '{}': expected man, bash, zsh or fish", crate::escape::escape(k)))
            })?),
        };
        let mode = if let Some(a) = generate {
            Mode::Generate(a)
        } else if self.version {
            Mode::Version
        } else if self.probe_report {
            Mode::ProbeReport
        } else if self.stream {
            Mode::Stream
        } else if self.record {
            Mode::Record
        } else if self.history {
            Mode::History
        } else if self.route || self.statistics || self.ethernet {
            Mode::Info {
                route: self.route,
                statistics: self.statistics,
                ethernet: self.ethernet,
            }
        } else {
            Mode::Connections
        };
        if self.delta && (interval.is_none() || !(self.statistics || self.ethernet)) {
            return Err(UsageError("--delta needs an INTERVAL and -e or -s: it shows how their counters changed between displays".into()));
        }
        check_pid(self.pid, &mode)?;
        let (record, query, at) = self.history_options(interval.is_some(), proto, family)?;
        if self.all_namespaces && matches!(mode, Mode::Info { .. } | Mode::ProbeReport | Mode::Version | Mode::Generate(_)) {
            return Err(UsageError(
                "--all-namespaces selects connections: it goes with a connection display, INTERVAL or --stream, not -r, -s, -e or --probe-report".into(),
            ));
        }
        Ok(Config {
            mode,
            all: self.all || self.listening,
            listening_only: self.listening,
            numeric: self.numeric,
            fqdn: self.fqdn,
            owner: self.owner,
            executable: self.executable,
            verbose: self.verbose,
            offload: self.offload,
            proto,
            stats_proto,
            family,
            json: self.json,
            interval,
            delta: self.delta,
            backend,
            // The recorder runs for days beside whatever load comes: a
            // larger ring rides out longer waits for the CPU.
            ring_size: if self.record && self.ring_size == self::config::DEFAULT_RING_SIZE {
                self::config::RECORD_RING_SIZE
            } else {
                self.ring_size
            },
            owner_map_size: self.owner_map_size,
            max_rows: self.max_rows,
            fail_on_loss: self.fail_on_loss,
            count: self.count,
            duration: self.duration,
            trace: !self.no_trace,
            pid: self.pid,
            proc_root: self.proc_root,
            sys_root: self.sys_root,
            runtime_root: self.runtime_root,
            all_namespaces: self.all_namespaces,
            record,
            query,
            at,
        })
    }

    /// --record, --history, --at and what goes with them.
    fn history_options(
        &self,
        interval: bool,
        proto: ProtoFilter,
        family: Family,
    ) -> Result<(self::config::RecordOptions, crate::sources::history::query::Filter, Option<i64>), UsageError> {
        let esc = crate::escape::escape;
        let picked: Vec<&str> = [(self.stream, "--stream"), (self.record, "--record"), (self.history, "--history"), (self.at.is_some(), "--at")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        if picked.len() > 1 {
            return Err(UsageError(format!("{} and {} cannot be combined: pick one", picked[0], picked[1])));
        }
        let history_mode = self.record || self.history || self.at.is_some();
        if history_mode {
            if self.route || self.statistics || self.ethernet || self.probe_report || self.version || self.generate.is_some() {
                return Err(UsageError(format!("{} goes with the connection table, not -r, -s, -e or --probe-report", picked[0])));
            }
            if interval {
                return Err(UsageError(format!("{} takes no INTERVAL", picked[0])));
            }
        }
        let db_given = self.db != std::path::Path::new(crate::sources::history::DEFAULT_DB);
        if db_given && !history_mode {
            return Err(UsageError("--db names the history database: it goes with --record, --history or --at".into()));
        }
        let url = self.db.to_str().filter(|s| crate::sources::history::pg::is_url(s));
        let pg = url.map(crate::sources::history::pg::Target::parse).transpose().map_err(|why| UsageError(format!("invalid --db: {why}")))?;
        if (self.local_db.is_some() || self.host_name.is_some()) && !(self.record && pg.is_some()) {
            return Err(UsageError("--local-db and --host-name go with --record and a PostgreSQL --db (postgresql://...)".into()));
        }
        if self.host.is_some() && !((self.history || self.at.is_some()) && pg.is_some()) {
            return Err(UsageError("--host selects a host of a fleet's history: it goes with --history or --at and a PostgreSQL --db (postgresql://...)".into()));
        }
        for (name, v) in [("--host-name", &self.host_name), ("--host", &self.host)] {
            if v.as_deref().is_some_and(|h| h.is_empty() || h.len() > 255 || h.chars().any(char::is_control)) {
                return Err(UsageError(format!("invalid {name} '{}': expected a host name (1 to 255 printable characters)", esc(v.as_deref().unwrap_or("")))));
            }
        }
        let own_host = || crate::sources::history::pg::host_name(&self.proc_root);
        for (given, flag) in [(self.since.is_some(), "--since"), (self.until.is_some(), "--until")] {
            if given && !self.history {
                return Err(UsageError(format!("{flag} selects lifetimes: it goes with --history")));
            }
        }
        for (given, flag) in [
            (self.remote.is_some(), "--remote"),
            (self.local.is_some(), "--local"),
            (self.port.is_some(), "--port"),
            (self.comm.is_some(), "--comm"),
            (self.unit.is_some(), "--unit"),
        ] {
            if given && !(self.history || self.at.is_some()) {
                return Err(UsageError(format!("{flag} selects recorded connections: it goes with --history or --at")));
            }
        }
        if (self.retain != "7d" || self.max_db_size.is_some()) && !self.record {
            return Err(UsageError("--retain and --max-db-size bound what --record keeps: they go with --record".into()));
        }
        let now = crate::sources::history::now_us();
        let time = |flag: &str, s: &Option<String>| -> Result<Option<i64>, UsageError> {
            s.as_deref()
                .map(|t| crate::timefmt::parse_time(t, now).map_err(|why| UsageError(format!("invalid {flag} '{}': {why}", esc(t)))))
                .transpose()
        };
        let at = time("--at", &self.at)?;
        let since = time("--since", &self.since)?;
        let until = time("--until", &self.until)?;
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(UsageError("--since is after --until: nothing can match".into()));
            }
        }
        let endpoint = |flag: &str, s: &Option<String>| -> Result<Option<(std::net::IpAddr, Option<u16>)>, UsageError> {
            s.as_deref()
                .map(|a| {
                    parse_endpoint(a).ok_or_else(|| {
                        UsageError(format!("invalid {flag} '{}': expected ADDR or ADDR:PORT ([ADDR]:PORT for IPv6)", esc(a)))
                    })
                })
                .transpose()
        };
        let retain_us = crate::timefmt::parse_duration_us(&self.retain)
            .map_err(|why| UsageError(format!("invalid --retain '{}': {why}", esc(&self.retain))))?;
        let max_db_bytes = self
            .max_db_size
            .as_deref()
            .map(|b| parse_bytes(b).ok_or_else(|| UsageError(format!("invalid --max-db-size '{}': expected a number of bytes of at least 65536 (K, M, G suffixes: powers of 1024)", esc(b)))))
            .transpose()?;
        let query = crate::sources::history::query::Filter {
            since_us: since,
            until_us: until,
            remote: endpoint("--remote", &self.remote)?,
            local: endpoint("--local", &self.local)?,
            port: self.port,
            pid: self.pid,
            comm: self.comm.as_ref().map(|c| c.as_bytes().to_vec()),
            unit: self.unit.clone(),
            tcp: proto.tcp,
            udp: proto.udp,
            ipv4: family.v4(),
            ipv6: family.v6(),
            listed: false,
            // --at shows one host's table: this one's unless --host names another.
            host: match (&pg, &self.host) {
                (Some(_), Some(h)) => Some(h.clone()),
                (Some(_), None) if self.at.is_some() => Some(own_host()),
                _ => None,
            },
        };
        let db = match (&pg, &self.local_db) {
            (Some(_), Some(local)) => local.clone(),
            (Some(_), None) => std::path::PathBuf::from(crate::sources::history::DEFAULT_DB),
            (None, _) => self.db.clone(),
        };
        let host_name = self.host_name.clone().unwrap_or_else(own_host);
        Ok((self::config::RecordOptions { db, retain_us, max_db_bytes, pg, host_name }, query, at))
    }
}

/// `ADDR`, `ADDR:PORT`, `[ADDR]` or `[ADDR]:PORT`.
fn parse_endpoint(s: &str) -> Option<(std::net::IpAddr, Option<u16>)> {
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    bare.parse().ok().map(|ip| (ip, None))
}

/// Bytes, with an optional K, M, G or T (powers of 1024); at least 64 KiB.
fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&t[..i], 1 << 20),
        (i, 'g' | 'G') => (&t[..i], 1 << 30),
        (i, 't' | 'T') => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult).filter(|&b| b >= 65_536)
}

/// `--pid` narrows connections and events; -r/-s/-e and the probe report
/// are not per process.
fn check_pid(pid: Option<u32>, mode: &Mode) -> Result<(), UsageError> {
    match (pid, mode) {
        (Some(p), Mode::Info { .. } | Mode::ProbeReport | Mode::Version | Mode::Generate(_)) => Err(UsageError(format!(
            "--pid {p} selects connections: it goes with a connection display, INTERVAL or --stream, not -r, -s, -e or --probe-report"
        ))),
        _ => Ok(()),
    }
}

fn parse_proto(p: &str, statistics: bool) -> Result<(ProtoFilter, Option<StatsProto>), UsageError> {
    let lower = p.to_ascii_lowercase();
    let conn = match lower.as_str() {
        "tcp" => Some((ProtoFilter { tcp: true, udp: false, family: None }, Family::V4, StatsProto::Tcp)),
        "udp" => Some((ProtoFilter { tcp: false, udp: true, family: None }, Family::V4, StatsProto::Udp)),
        "tcpv6" => Some((ProtoFilter { tcp: true, udp: false, family: None }, Family::V6, StatsProto::TcpV6)),
        "udpv6" => Some((ProtoFilter { tcp: false, udp: true, family: None }, Family::V6, StatsProto::UdpV6)),
        _ => None,
    };
    if let Some((mut f, fam, sp)) = conn {
        f.family = Some(fam);
        return Ok((f, Some(sp)));
    }
    if statistics {
        let sp = match lower.as_str() {
            "ip" => Some(StatsProto::Ip),
            "ipv6" => Some(StatsProto::IpV6),
            "icmp" => Some(StatsProto::Icmp),
            "icmpv6" => Some(StatsProto::IcmpV6),
            _ => None,
        };
        if let Some(sp) = sp {
            return Ok((ProtoFilter::default(), Some(sp)));
        }
    }
    let allowed = if statistics {
        "TCP, UDP, TCPv6, UDPv6, IP, IPv6, ICMP or ICMPv6"
    } else {
        "TCP, UDP, TCPv6 or UDPv6 (IP, IPv6, ICMP, ICMPv6 with -s)"
    };
    Err(UsageError(format!(
        "invalid protocol '{}' for -p: -p selects a protocol here ({allowed}); to show processes use -o (PID) or -b (executable)",
        crate::escape::escape(p)
    )))
}
