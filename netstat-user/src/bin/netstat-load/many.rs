//! `hold-many`: N established loopback connections (2N sockets) spread over
//! several processes, each holding both ends of its share, because a process
//! here may not open more than 20,000 files.
use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::sys;

/// Files a worker keeps for itself besides its sockets.
const SPARE_FDS: u64 = 64;
/// Connections made before the worker accepts them (well under the backlog).
const BATCH: usize = 1000;
const LISTENERS: usize = 4;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    name: String,
    #[arg(long)]
    connections: u64,
    /// At least this many worker processes (more if the file limit needs it).
    #[arg(long, default_value_t = 1)]
    processes: u64,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

pub fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.seconds);
    let nofile = sys::raise_nofile();
    let per_process_max = nofile.saturating_sub(SPARE_FDS + LISTENERS as u64) / 2;
    if per_process_max == 0 {
        bail!("RLIMIT_NOFILE ({nofile}) is too low to hold connections");
    }
    let processes = a.processes.max(a.connections.div_ceil(per_process_max)).max(1);
    let mut workers = Vec::new();
    let mut offset = 0;
    for w in 0..processes {
        let share = a.connections / processes + u64::from(w < a.connections % processes);
        let (r, mut wr) = sys::pipe()?;
        let first = offset;
        let pid = sys::fork_named(&a.name, a.seconds + 5, || match hold_share(first, share) {
            Ok(conns) => {
                let _ = writeln!(wr, "ready");
                sys::sleep_until(deadline);
                drop(conns);
                0
            }
            Err(e) => {
                eprintln!("netstat-load hold-many worker: {e:#}");
                1
            }
        })?;
        offset += share;
        drop(wr);
        workers.push((pid, r));
    }
    let pids: Vec<i32> = workers.iter().map(|(p, _)| *p).collect();
    for (pid, r) in &mut workers {
        if sys::read_line(r).is_err() {
            for p in &pids {
                sys::kill(*p, libc::SIGKILL);
            }
            for p in &pids {
                sys::wait_ok(*p);
            }
            bail!("worker {pid} failed to establish its connections");
        }
    }
    sys::emit(&json!({
        "ready": true,
        "connections": a.connections,
        "pids": pids,
        "setup_ms": start.elapsed().as_millis() as u64,
    }));
    sys::sleep_until(deadline);
    for p in &pids {
        sys::kill(*p, libc::SIGTERM);
    }
    for p in &pids {
        sys::wait_ok(*p);
    }
    Ok(())
}

/// Make `count` connections to this process's own listeners, sources spread
/// over 127.0.0.x by global connection index; return both ends.
fn hold_share(first: u64, count: u64) -> Result<Vec<TcpStream>> {
    let mut listeners = Vec::new();
    for _ in 0..LISTENERS {
        listeners.push(sys::tcp_listen(&"127.0.0.1:0".parse().unwrap(), 4096).context("listen")?);
    }
    let dsts: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
    let mut conns = Vec::with_capacity(2 * count as usize);
    let mut i = 0u64;
    while i < count {
        let n = (count - i).min(BATCH as u64);
        let mut pending = [0usize; LISTENERS];
        for j in 0..n {
            let g = first + i + j;
            let li = (g % LISTENERS as u64) as usize;
            let host = 1 + ((g / LISTENERS as u64) % 250) as u8;
            let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0);
            // SO_LINGER 0 on both ends: when the holder goes, its sockets
            // reset instead of filling the TIME_WAIT table for the next run.
            let s = sys::tcp_connect_from(Some(&src), &dsts[li], true)
                .with_context(|| format!("connection {} from {src} to {}", g, dsts[li]))?;
            conns.push(s);
            pending[li] += 1;
        }
        for (l, k) in listeners.iter().zip(pending) {
            for _ in 0..k {
                let s = l.accept().context("accept")?.0;
                sys::linger_zero(s.as_raw_fd())?;
                conns.push(s);
            }
        }
        i += n;
    }
    Ok(conns)
}
