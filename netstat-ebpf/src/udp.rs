//! UDP endpoints: explicit bind (post_bind hooks), connect (sock_addr hook,
//! completed at syscall exit), the implicit bind of a first send (sendmsg
//! hooks, for sockets seen created unbound), and close (sock_release). All run in the owner's syscall.
//! Every cgroup program returns 1: it observes, it never refuses.
//! The cgroup programs ask for the socket's cookie (bpf_get_socket_cookie on
//! their context), sock_create included, so that a socket created while the
//! tracer runs has one for the programs that can only read it from memory
//! (the fexit/kprobe forms of the bind hook).
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_get_socket_cookie},
    macros::{cgroup_sock, cgroup_sock_addr, tracepoint},
    programs::{SockAddrContext, SockContext, TracePointContext},
};
use netstat_common::{AF_INET, AF_INET6, IPPROTO_UDP, PendingUdp, flags, kind, lost};

use crate::{
    PENDING_UDP, UDP_UNBOUND,
    emit::{Body, count_lost, emit, fill_current, now},
    scratch::Frame,
    sock::{Tuple, net_of, offsets, read_tuple},
};

const ALLOW: i32 = 1;

#[inline(always)]
fn body(kind: u32, flags: u32, sk: u64, cookie: u64, tuple: Tuple, t: u64) -> Body {
    let (_, netns) = net_of(sk, &offsets());
    Body::plain(kind, flags, sk, cookie, tuple, t, netns)
}

/// The cookie of a cgroup program's socket (assigned now if it had none).
#[inline(always)]
fn cookie_of(ctx: &impl EbpfContext) -> u64 {
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

#[cgroup_sock(post_bind4)]
pub fn udp_post_bind4(ctx: SockContext) -> i32 {
    post_bind(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn udp_post_bind6(ctx: SockContext) -> i32 {
    post_bind(&ctx, AF_INET6);
    ALLOW
}

#[inline(always)]
fn post_bind(ctx: &SockContext, family: u16) {
    let s = unsafe { &*ctx.sock };
    if s.protocol != IPPROTO_UDP as u32 {
        return;
    }
    let mut tuple = Tuple {
        family,
        protocol: IPPROTO_UDP,
        sport: s.src_port as u16,
        dport: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        tuple.saddr[..4].copy_from_slice(&s.src_ip4.to_ne_bytes());
    } else {
        let ip6 = s.src_ip6;
        tuple.saddr[0..4].copy_from_slice(&ip6[0].to_ne_bytes());
        tuple.saddr[4..8].copy_from_slice(&ip6[1].to_ne_bytes());
        tuple.saddr[8..12].copy_from_slice(&ip6[2].to_ne_bytes());
        tuple.saddr[12..16].copy_from_slice(&ip6[3].to_ne_bytes());
    }
    on_explicit_bind(ctx.as_ptr() as u64, cookie_of(ctx), tuple);
}

/// A successful bind() of UDP socket `sk`, in the binder's syscall; shared
/// with the fexit/kretprobe forms on inet_bind/inet6_bind.
#[inline(always)]
pub fn on_explicit_bind(sk: u64, cookie: u64, tuple: Tuple) {
    let t = now();
    let _ = UDP_UNBOUND.remove(&sk);
    emit_current(&body(kind::UDP_BIND, flags::OWNER_CURRENT, sk, cookie, tuple, t), t);
}

#[cgroup_sock(sock_create)]
pub fn udp_sock_create(ctx: SockContext) -> i32 {
    let s = unsafe { &*ctx.sock };
    if s.protocol == IPPROTO_UDP as u32 {
        let sk = ctx.as_ptr() as u64;
        if UDP_UNBOUND.insert(&sk, &sk, 0).is_err() {
            count_lost(lost::PENDING_FULL);
        }
        // Assigned now, for the bind hook's fexit/kprobe forms to read.
        let _ = cookie_of(&ctx);
    }
    ALLOW
}

#[cgroup_sock(sock_release)]
pub fn udp_sock_release(ctx: SockContext) -> i32 {
    let s = unsafe { &*ctx.sock };
    if s.protocol == IPPROTO_UDP as u32 {
        let sk = ctx.as_ptr() as u64;
        let _ = UDP_UNBOUND.remove(&sk);
        if let Ok(tuple) = read_tuple(sk, &offsets()) {
            // A socket that was never bound was never an endpoint.
            if tuple.sport != 0 {
                let t = now();
                let cookie = cookie_of(&ctx);
                emit_current(&body(kind::UDP_CLOSE, flags::OWNER_CURRENT, sk, cookie, tuple, t), t);
            }
        }
    }
    ALLOW
}

/// The socket of a sock_addr hook, when it is UDP.
#[inline(always)]
fn udp_sock(ctx: &SockAddrContext) -> Option<*mut aya_ebpf::bindings::bpf_sock> {
    let a = unsafe { &*ctx.sock_addr };
    if a.protocol != IPPROTO_UDP as u32 {
        return None;
    }
    let sk = unsafe { a.__bindgen_anon_1.sk };
    (!sk.is_null()).then_some(sk)
}

/// connect(): the cgroup hook runs before the kernel binds an unbound
/// socket, so whether the bind is implicit is known here; the port and the
/// result are known at syscall exit.
#[inline(always)]
fn remember_connect(ctx: &SockAddrContext) {
    let Some(sk) = udp_sock(ctx) else { return };
    let unbound = unsafe { (*sk).src_port } == 0;
    let p = PendingUdp {
        sock: sk as u64,
        flags: if unbound { flags::IMPLICIT_BIND } else { 0 },
        _pad: 0,
        cookie: cookie_of(ctx),
    };
    if PENDING_UDP.insert(&bpf_get_current_pid_tgid(), &p, 0).is_err() {
        count_lost(lost::PENDING_FULL);
    }
    if unbound {
        let _ = UDP_UNBOUND.remove(&(sk as u64));
    }
}

#[cgroup_sock_addr(connect4)]
pub fn udp_connect4(ctx: SockAddrContext) -> i32 {
    remember_connect(&ctx);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn udp_connect6(ctx: SockAddrContext) -> i32 {
    remember_connect(&ctx);
    ALLOW
}

/// sendto()/sendmsg() with an address: by now the kernel has bound the
/// socket; if we saw it created unbound, this send bound it.
#[inline(always)]
fn implicit_bind_on_send(ctx: &SockAddrContext) {
    let Some(sk) = udp_sock(ctx) else { return };
    let key = sk as u64;
    // PTR_TO_SOCKET allows no arithmetic: use the copy stored at creation.
    let Some(sk) = (unsafe { UDP_UNBOUND.get(&key) }).copied() else {
        return;
    };
    let _ = UDP_UNBOUND.remove(&key);
    if let Ok(mut tuple) = read_tuple(sk, &offsets()) {
        tuple.dport = 0;
        tuple.daddr = [0; 16];
        let t = now();
        let cookie = cookie_of(ctx);
        emit_current(&body(kind::UDP_BIND, flags::OWNER_CURRENT | flags::IMPLICIT_BIND, sk, cookie, tuple, t), t);
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub fn udp_sendmsg4(ctx: SockAddrContext) -> i32 {
    implicit_bind_on_send(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn udp_sendmsg6(ctx: SockAddrContext) -> i32 {
    implicit_bind_on_send(&ctx);
    ALLOW
}

/// Attached to `syscalls:sys_exit_connect`: the syscall is over, so an
/// implicitly bound port and the connect's result are known now.
#[tracepoint]
pub fn sys_exit_udp(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_udp(&ctx);
    0
}

fn try_sys_exit_udp(ctx: &TracePointContext) -> Result<(), i64> {
    let key = bpf_get_current_pid_tgid();
    let Some(p) = (unsafe { PENDING_UDP.get(&key) }).copied() else {
        return Ok(());
    };
    let _ = PENDING_UDP.remove(&key);
    let o = offsets();
    if o.sys_exit_ret == netstat_common::OFFSET_UNKNOWN {
        return Err(-1);
    }
    let ret: i64 = unsafe { ctx.read_at::<i64>(o.sys_exit_ret as usize) }.map_err(|e| e as i64)?;
    complete_connect(&p, ret)
}

/// The UDP connect in flight on this thread, if any (taken): io_uring's
/// IORING_OP_CONNECT runs the cgroup hook but never the syscall's exit,
/// and completes it at its completion instead (holder.rs).
#[inline(always)]
pub fn take_pending() -> Option<PendingUdp> {
    let key = bpf_get_current_pid_tgid();
    let p = (unsafe { PENDING_UDP.get(&key) }).copied()?;
    let _ = PENDING_UDP.remove(&key);
    Some(p)
}

/// A UDP connect `p` finished with `ret` (0 = connected): its implicit
/// bind, and the connect itself.
#[inline(always)]
pub fn complete_connect(p: &PendingUdp, ret: i64) -> Result<(), i64> {
    let o = offsets();
    let tuple = read_tuple(p.sock, &o)?;
    let t = now();
    // In the per-CPU scratch, not on the stack: the io_uring completion
    // hook calls this beside its own frame.
    let Some(frame) = Frame::enter_or_count() else { return Ok(()) };
    let owner = frame.owner();
    fill_current(owner, t, None);
    let owner = &*owner;
    if p.flags & flags::IMPLICIT_BIND != 0 && tuple.sport != 0 {
        let mut bound = tuple;
        bound.dport = 0;
        bound.daddr = [0; 16];
        emit(owner, &body(kind::UDP_BIND, flags::OWNER_CURRENT | flags::IMPLICIT_BIND, p.sock, p.cookie, bound, t));
    }
    if ret == 0 {
        emit(owner, &body(kind::UDP_CONNECT, flags::OWNER_CURRENT, p.sock, p.cookie, tuple, t));
    }
    Ok(())
}

/// Emit `b` in the name of the task on the CPU, its owner built in the
/// per-CPU frame rather than on the BPF stack (an `Owner` is 120 bytes of
/// the 512 a program's deepest chain of calls may use).
#[inline(always)]
fn emit_current(b: &Body, t: u64) {
    // Runs nest at most two deep here (a softirq's program over ours):
    // the frame is always there.
    let Some(frame) = Frame::enter_or_count() else { return };
    let owner = frame.owner();
    fill_current(owner, t, None);
    emit(owner, b);
}
