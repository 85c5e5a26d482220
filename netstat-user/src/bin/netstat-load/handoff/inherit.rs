//! `inherit`: a client-side hand-off. The client connects and forks; the
//! parent closes its copy and stays alive; the child sends the request,
//! reads the reply, holds and closes first. The server is plain: it accepts,
//! answers, and closes once the client has.
use std::{net::TcpStream, os::fd::AsRawFd};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::{Coordinator, Ctx, Started};
use crate::sys;

pub fn start(ctx: &Ctx, co: &mut Coordinator) -> Result<Started> {
    let server = ctx.fork("m", || server(ctx))?;
    co.child(server);
    let (_, listen) = super::listen_report(co)?;
    let client = ctx.fork("c", || client(ctx, listen))?;
    co.child(client);
    Ok(Started {
        master_pid: server,
        listen,
        pids: super::fields(json!({"server": server, "client": client})),
        extra: Default::default(),
        holders: ctx.connections,
        extra_reports: 0,
    })
}

fn server(ctx: &Ctx) -> Result<()> {
    let me = std::process::id();
    let l = sys::tcp_listen(&ctx.listen_on, 128).with_context(|| format!("listen on {}", ctx.listen_on))?;
    ctx.report(&json!({"listen": l.local_addr()?.to_string()}))?;
    let mut conns = Vec::new();
    for _ in 0..ctx.connections {
        let (s, _) = l.accept().context("accept")?;
        super::answer(&s)?;
        ctx.report(&super::server_end(&s, me, me)?)?;
        conns.push(s);
    }
    for s in &conns {
        super::drain(s);
    }
    Ok(())
}

fn client(ctx: &Ctx, dst: std::net::SocketAddr) -> Result<()> {
    let me = std::process::id();
    let mut children = Vec::new();
    for i in 0..ctx.connections {
        let s = TcpStream::connect(dst).with_context(|| format!("connect to {dst}"))?;
        let child = ctx.fork("w", || {
            use std::io::Write;
            writeln!(&s, "req {i}").context("write request")?;
            super::read_request(&s).context("read reply")?;
            ctx.report(&super::client_end(&s, me)?)?;
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
