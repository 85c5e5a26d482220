//! `reuseport`: K listener processes, each with its own SO_REUSEPORT
//! listener on one address and port; the kernel spreads connections among
//! their accept queues and each serves its own. The first line lists every
//! listener's PID and its listening socket's SO_COOKIE.
use std::{net::SocketAddr, os::fd::AsRawFd};

use anyhow::{Context as _, Result};
use serde_json::json;

use super::{Coordinator, Ctx, Started};
use crate::sys;

pub fn start(ctx: &Ctx, co: &mut Coordinator, k: u32) -> Result<Started> {
    let mut addr = ctx.listen_on;
    let (mut pids, mut listeners) = (Vec::new(), Vec::new());
    for _ in 0..k {
        // Each binds the port the first one got.
        let pid = ctx.fork("m", || listener(ctx, addr))?;
        co.child(pid);
        let (r, listen) = super::listen_report(co)?;
        addr = listen;
        pids.push(pid);
        listeners.push(json!({"pid": pid, "cookie": r["cookie"]}));
    }
    let client = super::fork_plain_client(ctx, co, addr)?;
    Ok(Started {
        master_pid: pids[0],
        listen: addr,
        pids: super::fields(json!({"listeners": pids, "client": client})),
        extra: super::fields(json!({"listeners": listeners})),
        holders: k,
        extra_reports: 0,
    })
}

fn listener(ctx: &Ctx, addr: SocketAddr) -> Result<()> {
    let me = std::process::id();
    let l = sys::tcp_listen_reuseport(&addr, 128).with_context(|| format!("listen on {addr} (SO_REUSEPORT)"))?;
    let cookie = sys::cookie(l.as_raw_fd()).context("SO_COOKIE")?;
    ctx.report(&json!({"listen": l.local_addr()?.to_string(), "cookie": cookie}))?;
    super::serve_until_release(ctx, &l, me)
}
