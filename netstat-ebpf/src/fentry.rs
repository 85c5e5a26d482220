//! BTF trampoline (fentry/fexit) forms of the hooks, for kernels that have
//! them. Each program only finds the socket and the states, then hands over
//! to the handlers it shares with the kprobe form (kfunc.rs) and to those of
//! state.rs and accept.rs: the events are the same as the tracepoint/cgroup
//! path's, field for field.
use aya_ebpf::{
    macros::{fentry, fexit, map},
    maps::PerCpuArray,
    programs::{FEntryContext, FExitContext},
};
use netstat_common::{lost, tcp_state::*};

use crate::{
    accept::on_accept,
    emit::count_lost,
    kfunc::{bound, child_created, saw, tcp_set_state},
    sock::{assign_cookie, offsets, stored_cookie},
};

/// tcp_set_state(sk, state): the tracepoint fires inside it, after the same
/// reads; at entry `sk_state` is still the old state. The call is recorded
/// for `inet_sock_set_state_fentry_rescue` (kfunc.rs), which reports the
/// calls this program was skipped for: the trampoline skips a program
/// already running on the CPU, as when a softirq changes a socket's state
/// while this one runs in process context (close(), connect()). A second
/// fentry program cannot do that reliably: the trampoline runs the one
/// attached last first, and a flag raised while this one runs leaves a
/// window at either end of its run.
#[fentry(function = "tcp_set_state")]
pub fn fentry_tcp_set_state(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let new: i32 = ctx.arg(1);
    let _ = tcp_set_state(sk, new as u32, assign_cookie(sk));
    saw(sk, new as u32 as u64);
    0
}

/// inet_csk_listen_start(sk) stores TCP_LISTEN without tcp_set_state (the
/// tracepoint fires there, before the port is taken): CLOSE -> LISTEN.
#[fentry(function = "inet_csk_listen_start")]
pub fn fentry_inet_csk_listen_start(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let _ = tcp_set_state(sk, LISTEN, assign_cookie(sk));
    saw(sk, LISTEN as u64);
    0
}

/// inet_csk_clone_lock(listener, req, prio) returns the child in SYN_RECV,
/// set without tcp_set_state. The tracepoint fires while the child's
/// fields are still the listener's: so the tuple is the listener's too.
/// The child's cookie is read: the tracepoint check asked for it inside the
/// call (kfunc.rs); bpf_get_func_ret hands the child back as a plain number,
/// which the cookie helper does not take.
#[fexit(function = "inet_csk_clone_lock")]
pub fn fexit_inet_csk_clone_lock(ctx: FExitContext) -> u32 {
    set_in_clone(1);
    clone_exit(&ctx);
    set_in_clone(0);
    0
}

/// A second program, as for tcp_set_state: a child is often created in
/// process context (the listener's backlog, processed when accept() or
/// close() releases it), and one created meanwhile by a softirq on the same
/// CPU finds the main program running, which the trampoline then skips.
#[fexit(function = "inet_csk_clone_lock")]
pub fn fexit_inet_csk_clone_lock_nested(ctx: FExitContext) -> u32 {
    if in_clone() {
        count_lost(lost::RESCUED);
        clone_exit(&ctx);
    }
    0
}

/// Per CPU: 1 while `fexit_inet_csk_clone_lock` runs.
#[map]
static IN_CLONE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn in_clone() -> bool {
    IN_CLONE.get(0).is_some_and(|v| *v != 0)
}

#[inline(always)]
fn set_in_clone(v: u32) {
    if let Some(p) = IN_CLONE.get_ptr_mut(0) {
        unsafe { *p = v };
    }
}

#[inline(always)]
fn clone_exit(ctx: &FExitContext) {
    let listener: u64 = ctx.arg(0);
    if let Ok(child) = ctx.ret::<u64>() {
        let _ = child_created(listener, child, stored_cookie(child, &offsets()));
    }
}

/// inet_csk_accept returns the accepted socket, in the acceptor's context.
/// Only the return value is read: the arguments changed in 6.10.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept(ctx: FExitContext) -> u32 {
    if let Ok(sk) = ctx.ret::<u64>() {
        if sk != 0 {
            let _ = on_accept(sk, &offsets());
        }
    }
    0
}

/// inet_bind/inet6_bind(sock, uaddr, len): a successful explicit bind.
#[fexit(function = "inet_bind")]
pub fn fexit_inet_bind(ctx: FExitContext) -> u32 {
    let sock: u64 = ctx.arg(0);
    if let Ok(0) = ctx.ret::<i32>() {
        let _ = bound(sock);
    }
    0
}

#[fexit(function = "inet6_bind")]
pub fn fexit_inet6_bind(ctx: FExitContext) -> u32 {
    let sock: u64 = ctx.arg(0);
    if let Ok(0) = ctx.ret::<i32>() {
        let _ = bound(sock);
    }
    0
}
