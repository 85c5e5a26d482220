//! `pass-fd` (systemd / haproxy style): the worker is forked before any
//! listener exists, so it inherits none; the acceptor accepts, sends each
//! descriptor to the worker over a Unix socketpair (SCM_RIGHTS, with its own
//! PID as the data) and closes its copy. The worker answers, holds, closes.
use std::{
    net::TcpStream,
    os::fd::{AsRawFd, OwnedFd},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use super::{Coordinator, Ctx, Started};
use crate::sys;

pub fn start(ctx: &Ctx, co: &mut Coordinator) -> Result<Started> {
    let (to_worker, from_acceptor) = sys::unix_socketpair()?;
    let worker = ctx.fork("w", || worker(ctx, &from_acceptor))?;
    co.child(worker);
    let acceptor = ctx.fork("m", || acceptor(ctx, &to_worker))?;
    co.child(acceptor);
    drop((to_worker, from_acceptor));
    let (_, listen) = super::listen_report(co)?;
    let client = super::fork_plain_client(ctx, co, listen)?;
    Ok(Started {
        master_pid: acceptor,
        listen,
        pids: super::fields(json!({"acceptor": acceptor, "worker": worker, "client": client})),
        extra: Default::default(),
        holders: 2,
        extra_reports: 0,
    })
}

fn acceptor(ctx: &Ctx, to_worker: &OwnedFd) -> Result<()> {
    let me = std::process::id();
    let l = sys::tcp_listen(&ctx.listen_on, 128).with_context(|| format!("listen on {}", ctx.listen_on))?;
    ctx.report(&json!({"listen": l.local_addr()?.to_string()}))?;
    for _ in 0..ctx.connections {
        let (s, _) = l.accept().context("accept")?;
        sys::send_fd(to_worker.as_raw_fd(), s.as_raw_fd(), &me.to_ne_bytes()).context("send fd")?;
        drop(s);
    }
    // Stays up (listener open) until the end, so the listener has an owner.
    ctx.wait_release()?;
    Ok(())
}

fn worker(ctx: &Ctx, from_acceptor: &OwnedFd) -> Result<()> {
    let mut conns = Vec::new();
    for _ in 0..ctx.connections {
        let mut pid = [0u8; 4];
        let (fd, n) = sys::recv_fd(from_acceptor.as_raw_fd(), &mut pid).context("receive fd")?;
        anyhow::ensure!(n == 4, "short message with the descriptor");
        let acceptor = u32::from_ne_bytes(pid);
        let s = TcpStream::from(fd);
        super::answer(&s)?;
        ctx.report(&super::server_end(&s, acceptor, acceptor)?)?;
        conns.push(s);
    }
    ctx.wait_release()?;
    drop(conns);
    Ok(())
}
