//! kprobe/kretprobe forms of the fentry.rs hooks, for kernels without BTF
//! trampolines. Same handlers, same events. A kretprobe cannot see the
//! arguments, so the ones needed at return are kept per thread at entry.
//!
//! Kprobes miss calls silently (before 6.7): no kprobe fires on a CPU while
//! any kprobe handler runs there (a softirq interrupting one of ours), and no
//! kprobe program runs while any kprobe or perf-event BPF program, or a BPF
//! map syscall, holds `bpf_prog_active` on that CPU. The tracepoint inside
//! tcp_set_state is blocked by neither, so the TCP state form pairs every
//! kprobe call with it: each kprobe program records the call it saw
//! (`KPROBE_SEEN`), and `inet_sock_set_state_kprobe_rescue`, firing later in
//! the same call, reports exactly the calls no record matches (kfunc.rs).
use aya_ebpf::{
    macros::{kprobe, kretprobe, map},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use netstat_common::tcp_state::LISTEN;

use crate::{
    accept::on_accept,
    kfunc::{BIND, CLONE, CLONE_MARK, bound, call_key, child_created, saw, tcp_set_state},
    sock::{offsets, stored_cookie},
};

/// (thread or idle CPU, function) -> the argument its kretprobe needs (the
/// listener, or the struct socket). LRU: a return we never see must not pin
/// an entry.
#[map]
static PROBE_ARGS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

#[inline(always)]
fn stash(func: u64, arg: Option<u64>) {
    if let Some(a) = arg {
        let _ = PROBE_ARGS.insert(&call_key(func), &a, 0);
    }
}

#[inline(always)]
fn unstash(func: u64) -> Option<u64> {
    let k = call_key(func);
    let v = unsafe { PROBE_ARGS.get(&k) }.copied();
    let _ = PROBE_ARGS.remove(&k);
    v
}

/// A state change seen at the function's entry, before its tracepoint. A
/// socket without a cookie yet (its first transition: nothing has asked for
/// one, and a kprobe cannot) is left unrecorded, so the tracepoint check,
/// which asks for one, reports the call instead (kfunc.rs).
#[inline(always)]
fn entered(sk: u64, new: u32) {
    let cookie = stored_cookie(sk, &offsets());
    if cookie == 0 {
        return;
    }
    saw(sk, new as u64);
    let _ = tcp_set_state(sk, new, cookie);
}

#[kprobe]
pub fn kprobe_tcp_set_state(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(new)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) {
        entered(sk, new as u32);
    }
    0
}

#[kprobe]
pub fn kprobe_inet_csk_listen_start(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        entered(sk, LISTEN);
    }
    0
}

#[kprobe]
pub fn kprobe_inet_csk_clone_lock(ctx: ProbeContext) -> u32 {
    // Only a call whose entry we saw gets its child reported at return: if
    // this program was skipped, the tracepoint reports the child instead.
    if let Some(listener) = ctx.arg::<u64>(0) {
        saw(listener, CLONE_MARK);
        stash(CLONE, Some(listener));
    }
    0
}

#[kretprobe]
pub fn kretprobe_inet_csk_clone_lock(ctx: RetProbeContext) -> u32 {
    let child: u64 = ctx.ret();
    // The tracepoint check inside the call asked for the child's cookie.
    if let Some(listener) = unstash(CLONE) {
        let _ = child_created(listener, child, stored_cookie(child, &offsets()));
    }
    0
}

#[kretprobe]
pub fn kretprobe_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    let sk: u64 = ctx.ret();
    if sk != 0 {
        let _ = on_accept(sk, &offsets());
    }
    0
}

/// Entry of inet_bind and inet6_bind: keep the struct socket for the return.
#[kprobe]
pub fn kprobe_inet_bind(ctx: ProbeContext) -> u32 {
    stash(BIND, ctx.arg::<u64>(0));
    0
}

#[kretprobe]
pub fn kretprobe_inet_bind(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    if let Some(sock) = unstash(BIND) {
        if ret == 0 {
            let _ = bound(sock);
        }
    }
    0
}
