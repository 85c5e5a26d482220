//! `churn`: short-lived loopback connections (connect, close) from P client
//! processes against L listeners in one server process, bounded in time.
//! Sources rotate over 127.0.0.x and the listeners' ports so neither the
//! ephemeral port range nor TIME_WAIT stalls the clients.
use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::sys;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "127.0.0.1")]
    addr: IpAddr,
    #[arg(long, default_value_t = 2)]
    processes: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Target total connections per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 4)]
    listeners: u32,
    /// Close with SO_LINGER 0 (RST, no TIME_WAIT on the client).
    #[arg(long)]
    rst: bool,
    /// Distinct 127.0.0.x source addresses to rotate over (IPv4 only).
    #[arg(long, default_value_t = 200)]
    sources: u32,
}

pub fn run(a: Args) -> Result<()> {
    if a.processes == 0 || a.listeners == 0 {
        bail!("--processes and --listeners must be at least 1");
    }
    let srv_name = format!("{}-srv", a.name);
    let (mut from_server, mut to_parent) = sys::pipe()?;
    let (mut from_parent, mut to_server) = sys::pipe()?;
    let (listeners, addr, seconds) = (a.listeners, a.addr, a.seconds);
    let server = sys::fork_named(&srv_name, seconds + 5, || match serve(addr, listeners, seconds + 2, &mut to_parent, &mut from_parent) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("netstat-load churn server: {e:#}");
            1
        }
    })?;
    drop(to_parent);
    let ports: Vec<SocketAddr> = sys::read_line(&mut from_server)
        .context("churn server did not start")?
        .split(' ')
        .map(|p| p.parse().context("bad port"))
        .collect::<Result<_>>()?;

    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.seconds);
    let per_process_rate = a.rate as f64 / a.processes as f64;
    let mut clients = Vec::new();
    for w in 0..a.processes {
        let (r, mut wr) = sys::pipe()?;
        let ports = &ports;
        let pid = sys::fork_named(&a.name, a.seconds + 5, || {
            let (n, errors) = churn(w, a.processes, ports, a.sources, per_process_rate, a.rst, deadline);
            let _ = writeln!(wr, "{n} {errors}");
            0
        })?;
        drop(wr);
        clients.push((pid, r));
    }
    let (mut total, mut errors) = (0u64, 0u64);
    for (pid, mut r) in clients {
        if let Ok(line) = sys::read_line(&mut r) {
            let mut it = line.split(' ').map(|x| x.parse::<u64>().unwrap_or(0));
            total += it.next().unwrap_or(0);
            errors += it.next().unwrap_or(0);
        }
        sys::wait_ok(pid);
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The server exits once it has accepted (and closed) every connection
    // the clients made, so each one ends the same way: none is left in an
    // accept queue for the listener's close to reset.
    let _ = writeln!(to_server, "{total}");
    sys::wait_ok(server);
    sys::emit(&json!({
        "connections": total,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "rate": (total as f64 / elapsed).round(),
        "errors": errors,
        "processes": a.processes,
        "listeners": ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    }));
    Ok(())
}

/// One client process: connect and close until the deadline; (made, failed).
fn churn(
    worker: u32,
    workers: u32,
    ports: &[SocketAddr],
    sources: u32,
    rate: f64,
    rst: bool,
    deadline: Instant,
) -> (u64, u64) {
    let start = Instant::now();
    let (mut made, mut failed) = (0u64, 0u64);
    let sources = sources.clamp(1, 250);
    let mut k = worker as u64;
    while Instant::now() < deadline {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(made as f64 / rate);
            if due >= deadline {
                break;
            }
            sys::sleep_until(due);
        }
        let dst = ports[(k % ports.len() as u64) as usize];
        let src = match dst.ip() {
            IpAddr::V4(_) => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + ((k / ports.len() as u64) % sources as u64) as u8)),
                0,
            )),
            IpAddr::V6(_) => None,
        };
        k += workers as u64;
        match sys::tcp_connect_from(src.as_ref(), &dst, rst) {
            Ok(s) => {
                drop(s);
                made += 1;
            }
            Err(_) => {
                failed += 1;
                // A refused or unroutable connect fails fast; don't spin.
                if failed % 64 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    (made, failed)
}

/// The server: one accepting thread per listener, closing what it accepts,
/// until it has accepted as many as the parent says were made (or `seconds`).
fn serve(addr: IpAddr, listeners: u32, seconds: u64, report: &mut impl Write, made: &mut impl std::io::BufRead) -> Result<()> {
    use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let accepted = Arc::new(AtomicU64::new(0));
    let mut ls = Vec::new();
    for _ in 0..listeners {
        ls.push(sys::tcp_listen(&SocketAddr::new(addr, 0), 4096).context("listen")?);
    }
    let addrs: Vec<String> = ls.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
    writeln!(report, "{}", addrs.join(" "))?;
    for l in ls {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            loop {
                if let Ok((s, _)) = l.accept() {
                    drop(s);
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let total: u64 = sys::read_line(made).ok().and_then(|l| l.parse().ok()).unwrap_or(u64::MAX);
    while accepted.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
