//! `handoff --pattern P`: connections whose socket changes hands (fork after
//! accept, SCM_RIGHTS, fork after connect, SO_REUSEPORT groups, shared
//! accept, io_uring accept), so tests can check that a tool names the process
//! that really holds each end, as `ss -tanp` does (issue 12).
//!
//! One coordinator (this process, which keeps its own name and holds no
//! socket) forks every role, prints every line and waits for everyone. Roles
//! report to it over one pipe (a JSON line per write, so lines never mix);
//! holders wait on a release pipe (one byte per holding process), which the
//! coordinator fills `hold-ms` after `all_held`, so all N connections are
//! held at once for at least that long. Lines, in order:
//!   {"pattern", "main_pid", "master_pid", "listen", "pids": {role: pid|[pid]}, ...}
//!     (reuseport adds "listeners": [{"pid", "cookie"}]; uring adds "direct",
//!     "udp_receiver", "udp_receiver_cookie")
//!   uring only: {"udp": {"pid", "local", "local_port", "remote", "cookie"}}
//!   {"conn": i, "client_pid", "client_port", "server_port", "listener_pid",
//!    "acceptor_pid", "holder_pid", "creator_pid", "side", "server_cookie", "client_cookie"}
//!   {"all_held": N}
//!   {"done": true}
//! `client_pid` is the process holding the client end when it reported (for
//! `inherit`, the forked child: the same as `holder_pid`).
mod inherit;
mod pass_fd;
mod prefork;
mod reuseport;
mod uring;
mod workers;

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::sys;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Master accepts, forks a child per connection, closes its copy.
    Prefork,
    /// Acceptor passes each accepted fd to a worker over SCM_RIGHTS.
    PassFd,
    /// Client connects, forks; the child holds the client end.
    Inherit,
    /// K processes, each with its own SO_REUSEPORT listener on one port.
    Reuseport,
    /// Master listens, W forked workers accept from the shared listener.
    Workers,
    /// Server accepts with IORING_OP_ACCEPT, client connects with IORING_OP_CONNECT.
    Uring,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::Prefork => "prefork",
            Pattern::PassFd => "pass-fd",
            Pattern::Inherit => "inherit",
            Pattern::Reuseport => "reuseport",
            Pattern::Workers => "workers",
            Pattern::Uring => "uring",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pattern: Pattern,
    /// Process names derive from it: NAME-m (master, acceptor, listener),
    /// NAME-w (worker, child holder), NAME-c (client). At most 13 bytes.
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// How long every connection stays held once all are reported.
    #[arg(long = "hold-ms", default_value_t = 3000)]
    hold_ms: u64,
    /// Release the holders as soon as a line (or end of file) comes on
    /// stdin, `--hold-ms` at the latest: a test releases them once it has
    /// looked, however slow the machine.
    #[arg(long = "release-on-stdin")]
    release_on_stdin: bool,
    /// Overall deadline: every process is gone by then.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Server port (0: the kernel picks one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// reuseport: listener processes.
    #[arg(long, default_value_t = 3)]
    listeners: u32,
    /// workers: worker processes.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// uring: accept into a fixed-file slot (a direct descriptor) and serve
    /// through it. Such a socket is in no process's fd table, so `ss -p`
    /// shows no user for it.
    #[arg(long)]
    direct: bool,
}

/// A JSON object's fields (empty for anything else).
fn fields(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// What every role process gets: where to report, what to wait on.
pub struct Ctx {
    name: String,
    connections: u32,
    seconds: u64,
    listen_on: SocketAddr,
    direct: bool,
    report: File,
    release: RawFd,
}

impl Ctx {
    fn role(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// One JSON line to the coordinator, in one write (pipe writes under
    /// PIPE_BUF are atomic).
    fn report(&self, v: &Value) -> io::Result<()> {
        let mut line = v.to_string();
        line.push('\n');
        (&self.report).write_all(line.as_bytes())
    }

    /// Block until the coordinator releases one holding process.
    fn wait_release(&self) -> io::Result<()> {
        let mut b = [0u8; 1];
        loop {
            let r = unsafe { libc::read(self.release, b.as_mut_ptr().cast(), 1) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Fork a role process; its errors go to stderr and make it exit 1.
    fn fork(&self, suffix: &str, body: impl FnOnce() -> Result<()>) -> Result<libc::pid_t> {
        let name = self.role(suffix);
        let pid = sys::fork_named(&name, self.seconds, || match body() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("netstat-load handoff {name}: {}", format!("{e:#}").replace('\n', " "));
                1
            }
        })
        .with_context(|| format!("fork {name}"))?;
        Ok(pid)
    }
}

/// The server side's setup, reported by the pattern once its listeners are up.
pub struct Started {
    master_pid: libc::pid_t,
    listen: SocketAddr,
    pids: serde_json::Map<String, Value>,
    /// Pattern-specific fields for the first line.
    extra: serde_json::Map<String, Value>,
    /// Processes that wait on the release pipe (one byte each).
    holders: u32,
    /// Reports besides the 2N connection ends (uring's UDP socket).
    extra_reports: u32,
}

/// The coordinator's view of the role processes it forked.
pub struct Coordinator {
    reports: BufReader<File>,
    children: Vec<(libc::pid_t, Option<bool>)>,
    deadline: Instant,
}

impl Coordinator {
    fn child(&mut self, pid: libc::pid_t) {
        self.children.push((pid, None));
    }

    /// The next report line; fails when a child fails or the deadline passes.
    fn next(&mut self) -> Result<Value> {
        loop {
            if !self.reports.buffer().contains(&b'\n') {
                let ready = sys::poll_readable(&[self.reports.get_ref().as_raw_fd()], 100)?;
                if !ready[0] {
                    self.check_children()?;
                    if Instant::now() > self.deadline {
                        bail!("deadline passed before every process reported");
                    }
                    continue;
                }
            }
            let line = sys::read_line(&mut self.reports)?;
            return serde_json::from_str(&line).with_context(|| format!("bad report {line:?}"));
        }
    }

    fn check_children(&mut self) -> Result<()> {
        for (pid, state) in &mut self.children {
            if state.is_none() {
                *state = sys::try_wait(*pid)?;
            }
            if *state == Some(false) {
                bail!("process {pid} failed");
            }
        }
        Ok(())
    }

    fn kill_all(&mut self) {
        for (pid, state) in &mut self.children {
            if state.is_none() {
                sys::kill(*pid, libc::SIGKILL);
                *state = Some(sys::wait_ok(*pid));
            }
        }
    }

    /// Wait for every child; true when all exited 0.
    fn wait_all(&mut self) -> bool {
        let mut ok = true;
        for (pid, state) in &mut self.children {
            let s = match state {
                Some(s) => *s,
                None => sys::wait_ok(*pid),
            };
            *state = Some(s);
            ok &= s;
        }
        ok
    }
}

pub fn run(a: Args) -> Result<()> {
    if a.name.len() > 13 {
        bail!("--name '{}' is longer than 13 bytes (NAME-m must fit a 15-byte comm)", a.name);
    }
    if a.connections == 0 || a.listeners == 0 || a.workers == 0 {
        bail!("--connections, --listeners and --workers must be at least 1");
    }
    if a.hold_ms >= a.seconds.saturating_mul(1000) {
        bail!("--hold-ms {} does not fit in --seconds {}", a.hold_ms, a.seconds);
    }
    let start = Instant::now();
    sys::backstop(a.seconds + 2);
    let (reports, report) = sys::pipe()?;
    let (release_r, mut release_w) = sys::pipe()?;
    let ctx = Ctx {
        name: a.name.clone(),
        connections: a.connections,
        seconds: a.seconds,
        listen_on: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port),
        direct: a.direct,
        report,
        release: release_r.get_ref().as_raw_fd(),
    };
    let mut co = Coordinator { reports, children: Vec::new(), deadline: start + Duration::from_secs(a.seconds) };
    let res = coordinate(&a, &ctx, &mut co, &mut release_w);
    if res.is_err() {
        co.kill_all();
        return res;
    }
    if !co.wait_all() {
        bail!("a {} process failed", a.pattern.name());
    }
    sys::emit(&json!({"done": true, "elapsed_ms": start.elapsed().as_millis() as u64}));
    Ok(())
}

fn coordinate(a: &Args, ctx: &Ctx, co: &mut Coordinator, release: &mut File) -> Result<()> {
    let started = match a.pattern {
        Pattern::Prefork => prefork::start(ctx, co)?,
        Pattern::PassFd => pass_fd::start(ctx, co)?,
        Pattern::Inherit => inherit::start(ctx, co)?,
        Pattern::Reuseport => reuseport::start(ctx, co, a.listeners)?,
        Pattern::Workers => workers::start(ctx, co, a.workers)?,
        Pattern::Uring => uring::start(ctx, co)?,
    };
    let mut first = json!({
        "pattern": a.pattern.name(),
        "main_pid": std::process::id(),
        "master_pid": started.master_pid,
        "listen": started.listen.to_string(),
        "pids": started.pids,
    });
    if let Value::Object(m) = &mut first {
        m.extend(started.extra);
    }
    sys::emit(&first);

    let side = if a.pattern == Pattern::Inherit { "client" } else { "server" };
    let mut ends: HashMap<(&'static str, u64), Value> = HashMap::new();
    let (mut conns, mut extra) = (0, 0);
    while conns < a.connections || extra < started.extra_reports {
        let r = co.next()?;
        let Some(end) = r["end"].as_str() else {
            sys::emit(&r);
            extra += 1;
            continue;
        };
        let (end, other) = match end {
            "server" => ("server", "client"),
            "client" => ("client", "server"),
            _ => bail!("bad report {r}"),
        };
        let port = r["client_port"].as_u64().unwrap_or_default();
        let Some(o) = ends.remove(&(other, port)) else {
            ends.insert((end, port), r);
            continue;
        };
        let (s, c) = if end == "server" { (&r, &o) } else { (&o, &r) };
        let held = if side == "server" { s } else { c };
        sys::emit(&json!({
            "conn": conns,
            "client_pid": c["pid"],
            "client_port": port,
            "server_port": s["server_port"],
            "listener_pid": s["listener_pid"],
            "acceptor_pid": s["acceptor_pid"],
            "holder_pid": held["pid"],
            "creator_pid": held["creator_pid"],
            "side": side,
            "server_cookie": s["cookie"],
            "client_cookie": c["cookie"],
        }));
        conns += 1;
    }
    sys::emit(&json!({"all_held": conns}));
    if a.release_on_stdin {
        sys::poll_readable(&[0], a.hold_ms.min(i32::MAX as u64) as i32).context("wait on stdin")?;
    } else {
        std::thread::sleep(sys::ms(a.hold_ms));
    }
    release.write_all(&vec![b'r'; started.holders as usize]).context("release the holders")?;
    Ok(())
}

/// What a server-side end reports once it has answered its client.
fn server_end(s: &TcpStream, listener_pid: u32, acceptor_pid: u32) -> Result<Value> {
    let fd = s.as_raw_fd();
    let peer = sys::peer_addr(fd)?.context("accepted socket has no peer")?;
    Ok(json!({
        "end": "server",
        "pid": std::process::id(),
        "client_port": peer.port(),
        "server_port": sys::local_addr(fd)?.port(),
        "listener_pid": listener_pid,
        "acceptor_pid": acceptor_pid,
        "creator_pid": acceptor_pid,
        "cookie": sys::cookie(fd).context("SO_COOKIE")?,
    }))
}

/// What a client end reports once it has its reply.
fn client_end(s: &TcpStream, creator_pid: u32) -> Result<Value> {
    let fd = s.as_raw_fd();
    let peer = sys::peer_addr(fd)?.context("client socket has no peer")?;
    Ok(json!({
        "end": "client",
        "pid": std::process::id(),
        "client_port": sys::local_addr(fd)?.port(),
        "server_port": peer.port(),
        "creator_pid": creator_pid,
        "cookie": sys::cookie(fd).context("SO_COOKIE")?,
    }))
}

/// Read one newline-terminated line, byte by byte so nothing past it is
/// consumed (the stream may change hands afterwards).
fn read_request(mut r: impl Read) -> Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 {
        if r.read(&mut b)? == 0 {
            bail!("peer closed before a full line");
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
    bail!("line too long")
}

/// The server's half of the exchange: one request line in, one reply out.
fn answer(mut s: &TcpStream) -> Result<()> {
    let req = read_request(s).context("read request")?;
    writeln!(s, "ok {req}").context("write reply")?;
    Ok(())
}

/// Read until the peer closes (the passive closer's wait).
fn drain(mut s: &TcpStream) {
    let mut buf = [0u8; 512];
    while s.read(&mut buf).is_ok_and(|n| n > 0) {}
}

/// The plain client of the server-side patterns, in one process: connect
/// all, send every request before reading any reply (one server process may
/// serve several connections in any order), report each end, then wait for
/// the servers to close.
fn plain_client(ctx: &Ctx, dst: SocketAddr, connect: impl Fn(&SocketAddr) -> Result<TcpStream>) -> Result<Vec<TcpStream>> {
    let me = std::process::id();
    let mut conns = Vec::new();
    for i in 0..ctx.connections {
        let mut s = connect(&dst).with_context(|| format!("connect to {dst}"))?;
        writeln!(s, "req {i}").context("write request")?;
        conns.push(s);
    }
    for s in &conns {
        read_request(s).context("read reply")?;
        ctx.report(&client_end(s, me)?)?;
    }
    for s in &conns {
        drain(s);
    }
    Ok(conns)
}

fn std_connect(dst: &SocketAddr) -> Result<TcpStream> {
    Ok(TcpStream::connect(dst)?)
}

/// Fork the plain client once the server side listens on `listen`.
fn fork_plain_client(ctx: &Ctx, co: &mut Coordinator, listen: SocketAddr) -> Result<libc::pid_t> {
    let pid = ctx.fork("c", || plain_client(ctx, listen, std_connect).map(drop))?;
    co.child(pid);
    Ok(pid)
}

/// Read the setup report of a server role: its listen address.
fn listen_report(co: &mut Coordinator) -> Result<(Value, SocketAddr)> {
    let r = co.next()?;
    let listen = r["listen"].as_str().context("setup report without 'listen'")?.parse().context("bad listen address")?;
    Ok((r, listen))
}

/// Accept and answer until released, then close everything (the server
/// closes first). Several processes may share the listener (made
/// non-blocking then): the one whose accept() returns a connection serves it.
fn serve_until_release(ctx: &Ctx, l: &TcpListener, listener_pid: u32) -> Result<()> {
    let me = std::process::id();
    let mut conns = Vec::new();
    loop {
        let ready = sys::poll_readable(&[l.as_raw_fd(), ctx.release], 1000)?;
        if ready[1] {
            ctx.wait_release()?;
            break;
        }
        if !ready[0] {
            continue;
        }
        match l.accept() {
            Ok((s, _)) => {
                answer(&s)?;
                ctx.report(&server_end(&s, listener_pid, me)?)?;
                conns.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).context("accept"),
        }
    }
    drop(conns);
    Ok(())
}
