//! `talk`: C held loopback connections between a client process and a server
//! process that carry data: each client connection sends M messages of B
//! bytes and waits for the server's echo (2 sends and 2 receives a message),
//! bounded in time; reports the rate and both processes' CPU time. The workload for what per-send and per-receive hooks
//! cost, which churn (no data) never exercises.
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    sync::{Arc, Barrier},
    thread,
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
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// Messages each connection sends (and gets echoed).
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Stop sending at this deadline even if messages are left.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

pub fn run(a: Args) -> Result<()> {
    if a.connections == 0 || a.size == 0 {
        bail!("--connections and --size must be at least 1");
    }
    let (mut from_server, mut to_parent) = sys::pipe()?;
    let (addr, conns, size, seconds) = (a.addr, a.connections, a.size, a.seconds);
    let server = sys::fork_named(&format!("{}-srv", a.name), seconds + 10, || {
        match serve(SocketAddr::new(addr, 0), conns, size, &mut to_parent) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("netstat-load talk server: {e:#}");
                1
            }
        }
    })?;
    drop(to_parent);
    let listen: SocketAddr = match sys::read_line(&mut from_server) {
        Ok(l) => l.parse().context("talk server reported a bad address")?,
        Err(e) => {
            sys::wait_ok(server);
            bail!("talk server did not start: {e}");
        }
    };
    let (mut from_client, mut report) = sys::pipe()?;
    let messages = a.messages;
    let client = sys::fork_named(&a.name, seconds + 10, || match talk(listen, conns, messages, size, seconds) {
        Ok((sent, secs)) => {
            let _ = writeln!(report, "{sent} {secs}");
            0
        }
        Err(e) => {
            eprintln!("netstat-load talk client: {e:#}");
            1
        }
    })?;
    drop(report);
    let line = sys::read_line(&mut from_client);
    let client_ok = sys::wait_ok(client);
    if !client_ok {
        sys::kill(server, libc::SIGKILL);
    }
    let server_ok = sys::wait_ok(server);
    // Both ends are reaped: their CPU time, steadier than the rate on a busy machine.
    let cpu = sys::children_cpu_seconds();
    let line = line.context("talk client did not report")?;
    if !client_ok || !server_ok {
        bail!("talk failed (client ok: {client_ok}, server ok: {server_ok})");
    }
    let mut it = line.split(' ');
    let sent: u64 = it.next().and_then(|x| x.parse().ok()).context("bad client report")?;
    let secs: f64 = it.next().and_then(|x| x.parse().ok()).context("bad client report")?;
    sys::emit(&json!({
        "messages": sent,
        "bytes": sent * size as u64,
        "connections": conns,
        "size": size,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "rate": (sent as f64 / secs).round(),
        "cpu_seconds": (cpu * 1e6).round() / 1e6,
        "complete": sent == messages * conns as u64,
    }));
    Ok(())
}

/// The client: open every connection, then one thread per connection sends
/// and waits for each echo. Returns (messages echoed, seconds from the first
/// send to the last echo), connection setup excluded.
fn talk(dst: SocketAddr, conns: u32, messages: u64, size: usize, seconds: u64) -> Result<(u64, f64)> {
    let streams: Vec<TcpStream> = (0..conns)
        .map(|_| sys::tcp_connect_from(None, &dst, false).with_context(|| format!("connect to {dst}")))
        .collect::<Result<_>>()?;
    let go = Arc::new(Barrier::new(conns as usize + 1));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let go = go.clone();
            thread::spawn(move || -> std::io::Result<u64> {
                s.set_nodelay(true)?;
                let (out, mut back) = (vec![0x5au8; size], vec![0u8; size]);
                go.wait();
                let mut done = 0;
                while done < messages && Instant::now() < deadline {
                    s.write_all(&out)?;
                    s.read_exact(&mut back)?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    go.wait();
    let start = Instant::now();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| anyhow::anyhow!("a talk thread panicked"))?.context("talk")?;
    }
    Ok((total, start.elapsed().as_secs_f64()))
}

/// The server: accept every connection, echo each on its own thread until
/// the client closes it.
fn serve(addr: SocketAddr, conns: u32, size: usize, report: &mut impl Write) -> Result<()> {
    let l = sys::tcp_listen(&addr, 4096).with_context(|| format!("listen on {addr}"))?;
    writeln!(report, "{}", l.local_addr()?)?;
    let mut threads = Vec::new();
    for _ in 0..conns {
        let (mut s, _) = l.accept().context("accept")?;
        threads.push(thread::spawn(move || -> std::io::Result<()> {
            s.set_nodelay(true)?;
            let mut buf = vec![0u8; size];
            loop {
                match s.read(&mut buf)? {
                    0 => return Ok(()),
                    n => s.write_all(&buf[..n])?,
                }
            }
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("an echo thread panicked"))?.context("echo")?;
    }
    Ok(())
}
