//! accept()/accept4() return in the accepting process: the returned fd is
//! resolved to its `struct sock`, whose owner becomes the acceptor. No form
//! of this hook can ask for the cookie (a syscall tracepoint and a kretprobe
//! cannot; fexit gets the socket as a plain number from bpf_get_func_ret):
//! they read the one the state tracepoint assigned at the child's
//! LISTEN -> SYN_RECV.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use netstat_common::{IPPROTO_TCP, KernelOffsets, flags, kind, tcp_state};

use crate::{
    ACCEPT_DUE, OWNERS,
    emit::{Body, count_lost, current_is_kthread, emit, fill_current, now},
    scratch::Frame,
    sock::{offsets, read, read_sock, sock_of_fd},
};

/// Attached to both `syscalls:sys_exit_accept` and `syscalls:sys_exit_accept4`.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_accept(&ctx);
    0
}

fn try_sys_exit_accept(ctx: &TracePointContext) -> Result<(), i64> {
    let o = offsets();
    if o.sys_exit_ret == netstat_common::OFFSET_UNKNOWN {
        return Err(-1);
    }
    let fd: i64 = unsafe { ctx.read_at::<i64>(o.sys_exit_ret as usize) }.map_err(|e| e as i64)?;
    if fd < 0 {
        return Ok(());
    }
    let sk = sock_of_fd(fd, &o).inspect_err(|_| count_lost(netstat_common::lost::READ_FAILED))?;
    on_accept(sk, &o)
}

/// The acceptor becomes the holder and the creator of the accepted socket
/// `sk`; shared with the fexit/kretprobe forms on inet_csk_accept
/// (fentry.rs, kprobe.rs). A socket reset before accept() is returned
/// already closed: its entry went at its CLOSE and is not made again (its
/// accept is still reported). A kernel thread's accept (an in-kernel
/// server) names no process.
#[inline(always)]
pub fn on_accept(sk: u64, o: &KernelOffsets) -> Result<(), i64> {
    // The state before the cookie: the state tracepoint gives a socket its
    // cookie before the kernel stores the state it moves to, so a socket
    // seen past SYN_RECV has its cookie.
    let Ok(state) = read::<u8>(sk, o.sk_state) else {
        count_lost(netstat_common::lost::READ_FAILED);
        return Err(-1);
    };
    let s = read_sock(sk, o).inspect_err(|_| count_lost(netstat_common::lost::READ_FAILED))?;
    let tuple = s.tuple;
    if tuple.protocol != IPPROTO_TCP || current_is_kthread() {
        return Ok(());
    }
    let netns = s.netns(o);
    let cookie = s.cookie;
    let t = now();
    let Some(frame) = Frame::enter_or_count() else { return Ok(()) };
    let owner = frame.owner();
    let prev = crate::state::entry_of(sk, cookie);
    fill_current(owner, t, prev);
    owner.cookie = cookie;
    // Keep when the connection started (its SYN_RECV), not when it was accepted.
    if let Some(prev) = prev {
        owner.start_ns = prev.start_ns;
    }
    owner.flags = flags::OWNER_CAPTURED;
    // Returned while still in SYN_RECV without a cookie: another CPU is
    // completing the handshake (the child was queued for accept() first),
    // and the kernel has not given the child its own cookie yet (it takes
    // its request's, 0, after the state tracepoint asked). The accept is
    // reported at the child's next transition, ESTABLISHED, which carries
    // the cookie; until then the listener's owner stays the entry's.
    if cookie == 0 && state as u32 == tcp_state::SYN_RECV {
        if ACCEPT_DUE.insert(&sk, &*owner, 0).is_ok() {
            match OWNERS.get_ptr_mut(&sk) {
                Some(p) => unsafe { (*p).accept_due = 1 },
                None => {
                    owner.accept_due = 1;
                    if OWNERS.insert(&sk, &*owner, 0).is_err() {
                        let _ = ACCEPT_DUE.remove(&sk);
                        count_lost(netstat_common::lost::OWNERS_FULL);
                        return Ok(());
                    }
                }
            }
            return Ok(());
        }
        count_lost(netstat_common::lost::PENDING_FULL);
    }
    crate::state::flush_pending_syn_recv(sk, cookie, &tuple, netns);
    // A socket reset before accept() is returned already closed: its entry
    // went at its CLOSE and is not made again.
    if state as u32 == tcp_state::CLOSE {
        let _ = OWNERS.remove(&sk);
    } else if OWNERS.insert(&sk, &*owner, 0).is_err() {
        count_lost(netstat_common::lost::OWNERS_FULL);
    }
    emit(owner, &Body::plain(kind::TCP_ACCEPT, flags::OWNER_CURRENT, sk, cookie, tuple, t, netns));
    Ok(())
}
