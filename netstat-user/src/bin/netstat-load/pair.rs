//! `pair`: a server process and a client process with their own names; the
//! client makes N sequential connections, each closed by the client (or the
//! server with --server-close-first). Each process prints its own lines;
//! with --timestamps each end also says when it opened and closed each one,
//! so tests can tell which time window a connection's events fall in; with
//! --cookies, every connection's SO_COOKIE on both ends, asked once the
//! connection is established (client) or accepted (server).
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::sys;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long = "server-name")]
    server_name: String,
    #[arg(long = "client-name")]
    client_name: String,
    /// 127.0.0.1 or ::1 (any local address works).
    #[arg(long)]
    addr: IpAddr,
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long)]
    count: u64,
    /// How long each connection stays open before the first close.
    #[arg(long = "hold-ms", default_value_t = 0)]
    hold_ms: u64,
    #[arg(long = "server-close-first")]
    server_close_first: bool,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Add CLOCK_REALTIME ns to each connection line (`opened_ns` before the
    /// connect, `closed_ns` after the close) and print one line per
    /// accepted connection from the server (`accepted`, with its `closed_ns`).
    #[arg(long)]
    timestamps: bool,
    /// Print each end's socket cookie: in the client's `conn` lines, and in
    /// one `accepted` line per connection from the server.
    #[arg(long)]
    cookies: bool,
    /// The side that closes first aborts instead (SO_LINGER 0: an RST, no FIN).
    #[arg(long)]
    rst: bool,
}

pub fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let listen_on = SocketAddr::new(a.addr, a.port);
    let (mut from_server, mut to_parent) = sys::pipe()?;
    let (count, hold, scf) = (a.count, sys::ms(a.hold_ms), a.server_close_first);
    let (stamps, cookies, rst) = (a.timestamps, a.cookies, a.rst);
    let server = sys::fork_named(&a.server_name, a.seconds, || {
        match serve(listen_on, count, hold, scf, stamps, cookies, scf && rst, &mut to_parent) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("netstat-load pair server: {e:#}");
                1
            }
        }
    })?;
    drop(to_parent);
    let listen: SocketAddr = match sys::read_line(&mut from_server) {
        Ok(l) => l.parse().context("server reported a bad address")?,
        Err(e) => {
            sys::wait_ok(server);
            bail!("server did not start: {e}");
        }
    };
    let client = sys::fork_named(&a.client_name, a.seconds, || match connect_all(listen, count, hold, scf, stamps, cookies, !scf && rst) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("netstat-load pair client: {e:#}");
            1
        }
    })?;
    let client_ok = sys::wait_ok(client);
    if !client_ok {
        sys::kill(server, libc::SIGKILL);
    }
    let server_ok = sys::wait_ok(server);
    if !client_ok || !server_ok {
        bail!("pair failed (client ok: {client_ok}, server ok: {server_ok})");
    }
    sys::emit(&json!({"done": true, "count": a.count, "elapsed_ms": start.elapsed().as_millis() as u64}));
    Ok(())
}

fn serve(
    addr: SocketAddr,
    count: u64,
    hold: Duration,
    close_first: bool,
    stamps: bool,
    cookies: bool,
    rst: bool,
    report: &mut impl Write,
) -> Result<()> {
    let l = sys::tcp_listen(&addr, 4096).with_context(|| format!("listen on {addr}"))?;
    let listen = l.local_addr()?;
    sys::emit(&json!({"role": "server", "pid": std::process::id(), "listen": listen.to_string()}));
    writeln!(report, "{listen}")?;
    let mut buf = [0u8; 4096];
    for i in 0..count {
        let (mut s, peer) = l.accept().context("accept")?;
        let local = sys::local_addr(s.as_raw_fd())?;
        let cookie = if cookies { Some(sys::cookie(s.as_raw_fd()).context("SO_COOKIE")?) } else { None };
        if close_first {
            std::thread::sleep(hold);
            if rst {
                sys::linger_zero(s.as_raw_fd()).context("SO_LINGER")?;
            }
        } else {
            while s.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
        drop(s);
        if stamps || cookies {
            let mut line = json!({"accepted": i, "local": local.to_string(), "remote": peer.to_string()});
            if stamps {
                line["closed_ns"] = sys::realtime_ns().into();
            }
            if let Some(c) = cookie {
                line["cookie"] = c.into();
            }
            sys::emit(&line);
        }
    }
    Ok(())
}

fn connect_all(dst: SocketAddr, count: u64, hold: Duration, server_closes: bool, stamps: bool, cookies: bool, rst: bool) -> Result<()> {
    sys::emit(&json!({"role": "client", "pid": std::process::id()}));
    let mut buf = [0u8; 4096];
    for i in 0..count {
        let opened = sys::realtime_ns();
        let mut s = sys::tcp_connect_from(None, &dst, rst).with_context(|| format!("connect to {dst}"))?;
        let local = sys::local_addr(s.as_raw_fd())?;
        let cookie = if cookies { Some(sys::cookie(s.as_raw_fd()).context("SO_COOKIE")?) } else { None };
        if server_closes {
            while s.read(&mut buf).is_ok_and(|n| n > 0) {}
        } else if !hold.is_zero() {
            std::thread::sleep(hold);
        }
        drop(s);
        let mut line = json!({"conn": i, "local": local.to_string(), "remote": dst.to_string()});
        if stamps {
            line["opened_ns"] = opened.into();
            line["closed_ns"] = sys::realtime_ns().into();
        }
        if let Some(c) = cookie {
            line["cookie"] = c.into();
        }
        sys::emit(&line);
    }
    Ok(())
}
