//! `udp`: one UDP socket in a process named NAME, with bind, connect and
//! sendto done in that order (each optional), so implicit binds can be seen.
//! Its line gives the socket's SO_COOKIE, asked after those calls.
use std::{net::SocketAddr, os::fd::AsRawFd, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::{parse_addr, sys};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    name: String,
    #[arg(long, value_parser = parse_addr)]
    bind: Option<SocketAddr>,
    #[arg(long, value_parser = parse_addr)]
    connect: Option<SocketAddr>,
    #[arg(long, value_parser = parse_addr)]
    sendto: Option<SocketAddr>,
    #[arg(long = "hold-ms", default_value_t = 0)]
    hold_ms: u64,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

pub fn run(a: Args) -> Result<()> {
    sys::set_comm(&a.name);
    sys::backstop(a.seconds);
    let family = [a.bind, a.connect, a.sendto].iter().flatten().next().map_or(libc::AF_INET, sys::family_of);
    let sock = sys::socket(family, libc::SOCK_DGRAM).context("UDP socket")?;
    let fd = sock.as_raw_fd();
    if let Some(addr) = &a.bind {
        sys::bind(fd, addr).with_context(|| format!("bind {addr}"))?;
    }
    if let Some(addr) = &a.connect {
        sys::connect(fd, addr).with_context(|| format!("connect {addr}"))?;
    }
    if let Some(addr) = &a.sendto {
        sys::sendto(fd, addr, b"netstat-load").with_context(|| format!("sendto {addr}"))?;
    }
    let local = sys::local_addr(fd)?;
    let remote = sys::peer_addr(fd)?;
    let cookie = sys::cookie(fd).context("SO_COOKIE")?;
    sys::emit(&json!({
        "pid": std::process::id(),
        "local": local.to_string(),
        "remote": remote.map(|r| r.to_string()),
        "cookie": cookie,
    }));
    std::thread::sleep(Duration::from_millis(a.hold_ms.min(a.seconds * 1000)));
    drop(sock);
    sys::emit(&json!({"closed": true}));
    Ok(())
}
