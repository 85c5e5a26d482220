//! `prefork` (PostgreSQL style): the master listens and accepts; for each
//! connection it forks a child and closes its own copy right after the fork.
//! The child drops the inherited listener, answers, holds, and closes first.
use std::os::fd::AsRawFd;

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::{Coordinator, Ctx, Started};
use crate::sys;

pub fn start(ctx: &Ctx, co: &mut Coordinator) -> Result<Started> {
    let master = ctx.fork("m", || master(ctx))?;
    co.child(master);
    let (_, listen) = super::listen_report(co)?;
    let client = super::fork_plain_client(ctx, co, listen)?;
    Ok(Started {
        master_pid: master,
        listen,
        pids: super::fields(json!({"master": master, "client": client})),
        extra: Default::default(),
        holders: ctx.connections,
        extra_reports: 0,
    })
}

fn master(ctx: &Ctx) -> Result<()> {
    let me = std::process::id();
    let l = sys::tcp_listen(&ctx.listen_on, 128).with_context(|| format!("listen on {}", ctx.listen_on))?;
    ctx.report(&json!({"listen": l.local_addr()?.to_string()}))?;
    let mut children = Vec::new();
    for _ in 0..ctx.connections {
        let (s, _) = l.accept().context("accept")?;
        let child = ctx.fork("w", || {
            sys::close_inherited(l.as_raw_fd());
            super::answer(&s)?;
            ctx.report(&super::server_end(&s, me, me)?)?;
            ctx.wait_release()?;
            // The holder's close: the child owns this copy only by fork.
            sys::close_inherited(s.as_raw_fd());
            Ok(())
        })?;
        drop(s);
        children.push(child);
    }
    let failed = children.iter().filter(|c| !sys::wait_ok(**c)).count();
    if failed > 0 {
        bail!("{failed} of {} children failed", children.len());
    }
    Ok(())
}
