//! `uring`: the server accepts with IORING_OP_ACCEPT on an ordinary listener
//! and serves with read/write; the client connects with IORING_OP_CONNECT,
//! and also connects one never-bound UDP socket the same way (the kernel
//! binds it at connect) to a UDP receiver the server holds. With --direct
//! the server accepts into a fixed-file slot and reads, writes and closes
//! through it: that socket is in no process's fd table, so `ss -p` (which
//! walks /proc/PID/fd) names no user for it, and it has no fd to ask
//! SO_COOKIE on (its `server_cookie` is null).
use std::{
    cell::RefCell,
    io,
    mem::{size_of, zeroed},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow, bail};
use io_uring::{IoUring, opcode, squeue, types};
use serde_json::json;

use super::{Coordinator, Ctx, Started};
use crate::sys;

pub fn start(ctx: &Ctx, co: &mut Coordinator) -> Result<Started> {
    let server = ctx.fork("m", || server(ctx))?;
    co.child(server);
    let (r, listen) = super::listen_report(co)?;
    let udp: SocketAddr =
        r["udp_receiver"].as_str().context("setup report without 'udp_receiver'")?.parse().context("bad UDP address")?;
    let client = ctx.fork("c", || client(ctx, listen, udp))?;
    co.child(client);
    Ok(Started {
        master_pid: server,
        listen,
        pids: super::fields(json!({"server": server, "client": client})),
        extra: super::fields(json!({"direct": ctx.direct, "udp_receiver": r["udp_receiver"], "udp_receiver_cookie": r["udp_receiver_cookie"]})),
        holders: 1,
        extra_reports: 1,
    })
}

/// Submit one entry and wait for its completion; a negative result is the errno.
fn complete(ring: &mut IoUring, e: squeue::Entry) -> io::Result<i32> {
    // SAFETY: every buffer and address the entry points to outlives this
    // call, which returns only once the kernel has completed it.
    unsafe { ring.submission().push(&e) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if let Some(cqe) = ring.completion().next() {
            let r = cqe.result();
            return if r < 0 { Err(io::Error::from_raw_os_error(-r)) } else { Ok(r) };
        }
    }
}

fn server(ctx: &Ctx) -> Result<()> {
    let me = std::process::id();
    let l = sys::tcp_listen(&ctx.listen_on, 128).with_context(|| format!("listen on {}", ctx.listen_on))?;
    let listen = l.local_addr()?;
    let udp = UdpSocket::bind((listen.ip(), 0)).context("bind the UDP receiver")?;
    ctx.report(&json!({
        "listen": listen.to_string(),
        "udp_receiver": udp.local_addr()?.to_string(),
        "udp_receiver_cookie": sys::cookie(udp.as_raw_fd()).context("SO_COOKIE")?,
    }))?;
    let mut ring = IoUring::new(8).context("io_uring_setup")?;
    if ctx.direct {
        ring.submitter().register_files_sparse(ctx.connections).context("register fixed-file table")?;
    }
    let mut conns = Vec::new();
    for i in 0..ctx.connections {
        let mut peer: libc::sockaddr_storage = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let mut accept = opcode::Accept::new(types::Fd(l.as_raw_fd()), (&mut peer as *mut libc::sockaddr_storage).cast(), &mut len);
        if ctx.direct {
            let slot = types::DestinationSlot::try_from_slot_target(i).map_err(|i| anyhow!("no fixed-file slot {i}"))?;
            accept = accept.file_index(Some(slot));
        }
        let fd = complete(&mut ring, accept.build()).context("IORING_OP_ACCEPT")?;
        let peer = sys::from_raw(&peer).context("accept gave no peer address")?;
        if ctx.direct {
            serve_fixed(&mut ring, types::Fixed(i))?;
            ctx.report(&json!({
                "end": "server",
                "pid": me,
                "client_port": peer.port(),
                "server_port": listen.port(),
                "listener_pid": me,
                "acceptor_pid": me,
                "creator_pid": me,
                "cookie": null,
            }))?;
        } else {
            // SAFETY: a non-direct accept's result is a new descriptor we own.
            let s = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            super::answer(&s)?;
            ctx.report(&super::server_end(&s, me, me)?)?;
            conns.push(s);
        }
    }
    ctx.wait_release()?;
    if ctx.direct {
        for i in 0..ctx.connections {
            complete(&mut ring, opcode::Close::new(types::Fixed(i)).build()).context("IORING_OP_CLOSE on a fixed file")?;
        }
    }
    drop(conns);
    drop(udp);
    Ok(())
}

/// The request/reply exchange through a fixed file, with io_uring ops only.
fn serve_fixed(ring: &mut IoUring, slot: types::Fixed) -> Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 256];
    while !req.contains(&b'\n') {
        let n = complete(ring, opcode::Recv::new(slot, buf.as_mut_ptr(), buf.len() as u32).build()).context("IORING_OP_RECV")?;
        if n == 0 {
            bail!("peer closed before a full request");
        }
        req.extend_from_slice(&buf[..n as usize]);
        if req.len() > 256 {
            bail!("request too long");
        }
    }
    let line = String::from_utf8_lossy(&req[..req.iter().position(|b| *b == b'\n').unwrap_or(req.len())]).into_owned();
    let reply = format!("ok {line}\n");
    let mut sent = 0;
    while sent < reply.len() {
        let rest = &reply.as_bytes()[sent..];
        sent += complete(ring, opcode::Send::new(slot, rest.as_ptr(), rest.len() as u32).build()).context("IORING_OP_SEND")? as usize;
    }
    Ok(())
}

/// A new socket of type `ty`, connected with IORING_OP_CONNECT.
fn uring_connect(ring: &RefCell<IoUring>, ty: libc::c_int, dst: &SocketAddr) -> Result<OwnedFd> {
    let fd = sys::socket(sys::family_of(dst), ty)?;
    let (ss, len) = sys::to_raw(dst);
    let connect = opcode::Connect::new(types::Fd(fd.as_raw_fd()), (&ss as *const libc::sockaddr_storage).cast(), len);
    complete(&mut ring.borrow_mut(), connect.build()).with_context(|| format!("IORING_OP_CONNECT to {dst}"))?;
    Ok(fd)
}

fn client(ctx: &Ctx, dst: SocketAddr, udp_dst: SocketAddr) -> Result<()> {
    let ring = RefCell::new(IoUring::new(8).context("io_uring_setup")?);
    let udp = UdpSocket::from(uring_connect(&ring, libc::SOCK_DGRAM, &udp_dst)?);
    let local = udp.local_addr()?;
    ctx.report(&json!({"udp": {
        "pid": std::process::id(),
        "local": local.to_string(),
        "local_port": local.port(),
        "remote": udp_dst.to_string(),
        "cookie": sys::cookie(udp.as_raw_fd()).context("SO_COOKIE")?,
    }}))?;
    let conns = super::plain_client(ctx, dst, |d| Ok(TcpStream::from(uring_connect(&ring, libc::SOCK_STREAM, d)?)))?;
    drop(conns);
    drop(udp);
    Ok(())
}
