//! `workers` (nginx style): the master creates the listener and forks W
//! workers that share it and each call accept(); the master never accepts.
//! The worker whose accept() returned a connection serves, holds, closes.
use std::os::fd::AsRawFd;

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::{Coordinator, Ctx, Started};
use crate::sys;

pub fn start(ctx: &Ctx, co: &mut Coordinator, w: u32) -> Result<Started> {
    let master = ctx.fork("m", || master(ctx, w))?;
    co.child(master);
    let (r, listen) = super::listen_report(co)?;
    let client = super::fork_plain_client(ctx, co, listen)?;
    Ok(Started {
        master_pid: master,
        listen,
        pids: super::fields(json!({"master": master, "workers": r["workers"], "client": client})),
        extra: Default::default(),
        holders: w + 1,
        extra_reports: 0,
    })
}

fn master(ctx: &Ctx, w: u32) -> Result<()> {
    let me = std::process::id();
    let l = sys::tcp_listen(&ctx.listen_on, 128).with_context(|| format!("listen on {}", ctx.listen_on))?;
    // Shared by every worker: a woken worker that loses the race gets EAGAIN.
    sys::set_nonblocking(l.as_raw_fd())?;
    let mut workers = Vec::new();
    for _ in 0..w {
        workers.push(ctx.fork("w", || super::serve_until_release(ctx, &l, me))?);
    }
    ctx.report(&json!({"listen": l.local_addr()?.to_string(), "workers": workers}))?;
    ctx.wait_release()?;
    let failed = workers.iter().filter(|p| !sys::wait_ok(**p)).count();
    if failed > 0 {
        bail!("{failed} of {w} workers failed");
    }
    Ok(())
}
