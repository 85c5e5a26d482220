//! `hold`: the given sockets, all in this one process, open until killed or
//! the deadline. Listeners keep accepting so connections to them establish.
use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::{parse_addr, sys};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    name: String,
    #[arg(long = "tcp-listen", value_parser = parse_addr)]
    tcp_listen: Vec<SocketAddr>,
    #[arg(long = "udp-bind", value_parser = parse_addr)]
    udp_bind: Vec<SocketAddr>,
    #[arg(long = "tcp-connect", value_parser = parse_addr)]
    tcp_connect: Vec<SocketAddr>,
    #[arg(long = "udp-connect", value_parser = parse_addr)]
    udp_connect: Vec<SocketAddr>,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Hold them from PID 1 of a new PID namespace (as in a container): the
    /// process forks into it and waits for the holder.
    #[arg(long = "pid-namespace")]
    pid_namespace: bool,
}

/// unshare(CLONE_NEWPID) and fork: the child is PID 1 of the new namespace
/// and goes on; the parent waits for it and exits with its status.
fn enter_pid_namespace() -> Result<()> {
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWPID)");
    }
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            // Goes with the parent (a signal from the host kills that one).
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
            Ok(())
        }
        child => {
            let mut status = 0;
            unsafe { libc::waitpid(child, &mut status, 0) };
            std::process::exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 });
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    sys::set_comm(&a.name);
    sys::backstop(a.seconds + 5);
    if a.pid_namespace {
        enter_pid_namespace()?;
        sys::backstop(a.seconds + 5);
    }
    // Our PID as the host's /proc names it (getpid() is the namespace's).
    let host_pid: u32 = std::fs::read_link("/proc/self").ok().and_then(|p| p.to_str()?.parse().ok()).unwrap_or(std::process::id());

    let mut listeners = Vec::new();
    for addr in &a.tcp_listen {
        let l = sys::tcp_listen(addr, 4096).with_context(|| format!("listen on {addr}"))?;
        l.set_nonblocking(true)?;
        listeners.push(l);
    }
    let mut udp = Vec::new();
    for addr in &a.udp_bind {
        udp.push(UdpSocket::bind(addr).with_context(|| format!("UDP bind {addr}"))?);
    }
    let mut tcp_conns = Vec::new();
    for addr in &a.tcp_connect {
        let s = TcpStream::connect_timeout(addr, Duration::from_secs(5)).with_context(|| format!("connect to {addr}"))?;
        tcp_conns.push(s);
    }
    let mut udp_conns = Vec::new();
    for addr in &a.udp_connect {
        let any: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
        let s = UdpSocket::bind(any)?;
        s.connect(addr).with_context(|| format!("UDP connect {addr}"))?;
        udp_conns.push(s);
    }

    let pair = |local: SocketAddr, remote: SocketAddr| json!({"local": local.to_string(), "remote": remote.to_string()});
    let mut tcp_connect = Vec::new();
    for s in &tcp_conns {
        tcp_connect.push(pair(s.local_addr()?, s.peer_addr()?));
    }
    let mut udp_connect = Vec::new();
    for s in &udp_conns {
        udp_connect.push(pair(s.local_addr()?, s.peer_addr()?));
    }
    let mut tcp_listen = Vec::new();
    for l in &listeners {
        tcp_listen.push(l.local_addr()?.to_string());
    }
    let mut udp_bind = Vec::new();
    for s in &udp {
        udp_bind.push(s.local_addr()?.to_string());
    }
    sys::emit(&json!({
        "ready": true,
        "pid": host_pid,
        "ns_pid": std::process::id(),
        "tcp_listen": tcp_listen,
        "udp_bind": udp_bind,
        "tcp_connect": tcp_connect,
        "udp_connect": udp_connect,
    }));

    let mut accepted = Vec::new();
    let mut fds: Vec<libc::pollfd> =
        listeners.iter().map(|l| libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now()).as_millis().min(200) as i32;
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(left as u64));
            continue;
        }
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left) };
        for (l, p) in listeners.iter().zip(fds.iter_mut()) {
            p.revents = 0;
            while let Ok((s, _)) = l.accept() {
                accepted.push(s);
            }
        }
    }
    Ok(())
}
