//! TCP state transitions from the `inet_sock_set_state` tracepoint, as a
//! BTF-typed raw tracepoint (tp_btf), or a plain raw tracepoint where the
//! kernel refuses that form: perf-event tracepoint programs are skipped
//! whenever any BPF program already runs on the CPU (a softirq over one of
//! our syscall-exit programs, or another tool's kprobe), which silently lost
//! transitions under load; raw tracepoints (tp_btf included: both run
//! through __bpf_trace_run) only guard against their own recursion, and are
//! cheaper. Most transitions run in softirq, where the task on the CPU is
//! not the socket's owner: the owner comes from `OWNERS`, filled where the
//! owner itself is on the CPU.
//!
//! The tp_btf form asks for the socket's cookie (bpf_get_socket_cookie,
//! which only BTF-typed programs may call on a `struct sock *`): the kernel
//! assigns cookies lazily, so asking at a socket's first transition is what
//! gives it one, for every later event, for the programs that can only read
//! it from memory, and for the TIME_WAIT socket, which copies it. The raw
//! form reads `skc_cookie` and reports 0 for a socket nothing asked about.
use aya_ebpf::{
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, RawTracePointContext},
};
use netstat_common::{
    IPPROTO_TCP, KernelOffsets, ListenKey, Listener, Owner, flags, kind, lost,
    tcp_state::*,
};

use crate::{
    LISTENERS, OWNERS,
    emit::{Body, NO_OWNER, count_lost, current_owner, emit, now},
    sock::{Tuple, assign_cookie, net_of, offsets, read, read_state_tuple, stored_cookie},
};

/// TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<i32>(1) as u32, ctx.arg::<i32>(2) as u32);
    let cookie = assign_cookie(sk);
    let _ = traced_transition(sk, old, new, cookie);
    mark_handled(sk, new as u64);
    0
}

/// The same tracepoint, attached after the main program. The kernel skips a
/// raw tracepoint program that is already running on the CPU, so a softirq
/// that changes a socket's state while the main program runs in process
/// context (close(), connect()) would lose that transition. This copy runs
/// right after the main program in every firing and handles exactly the
/// firings the main program did not mark as handled. (A flag raised while
/// the main program ran left a window at either end of its run, where the
/// kernel counted it running but the flag was down: a softirq there was lost.)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf_nested(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<i32>(1) as u32, ctx.arg::<i32>(2) as u32);
    if !take_handled(sk, new as u64) {
        count_lost(lost::RESCUED);
        let cookie = assign_cookie(sk);
        let _ = traced_transition(sk, old, new, cookie);
    }
    0
}

/// The raw tracepoint form of `inet_sock_set_state_btf`, for kernels that
/// refuse it (bpf_get_socket_cookie in tracing programs came in 5.12):
/// the cookie as stored, 0 until something asked for it.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<u64>(1) as i32 as u32, ctx.arg::<u64>(2) as i32 as u32);
    let _ = traced_transition(sk, old, new, stored_cookie(sk, &offsets()));
    mark_handled(sk, new as u64);
    0
}

/// The raw tracepoint form of `inet_sock_set_state_btf_nested`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<u64>(1) as i32 as u32, ctx.arg::<u64>(2) as i32 as u32);
    if !take_handled(sk, new as u64) {
        count_lost(lost::RESCUED);
        let _ = traced_transition(sk, old, new, stored_cookie(sk, &offsets()));
    }
    0
}

/// Per CPU: firings the main program handled whose nested copy has not run
/// yet, as (socket, new state, time). Tracepoint probes run with preemption
/// off, so both programs of one firing run on one CPU. At most two are in
/// flight (process context and a softirq over it); a mark whose copy was
/// skipped goes stale and its slot is reused.
#[repr(C)]
pub struct Handled {
    sk: [u64; HANDLED_SLOTS],
    state: [u64; HANDLED_SLOTS],
    ts: [u64; HANDLED_SLOTS],
}
const HANDLED_SLOTS: usize = 8;
/// A mark older than this is stale (its nested copy never ran).
const HANDLED_WINDOW_NS: u64 = 100_000_000;

#[map]
static HANDLED: PerCpuArray<Handled> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn mark_handled(sk: u64, new: u64) {
    let Some(h) = HANDLED.get_ptr_mut(0) else { return };
    let h = unsafe { &mut *h };
    let t = now();
    // A free or stale slot, else the oldest.
    let mut pick = 0;
    let mut oldest = u64::MAX;
    for i in 0..HANDLED_SLOTS {
        if h.state[i] == 0 || t.wrapping_sub(h.ts[i]) >= HANDLED_WINDOW_NS {
            pick = i;
            break;
        }
        if h.ts[i] < oldest {
            oldest = h.ts[i];
            pick = i;
        }
    }
    h.sk[pick] = sk;
    // TCP states start at 1: 0 marks a free slot.
    h.state[pick] = new;
    h.ts[pick] = t;
}

/// Whether the main program handled this firing (consuming its mark).
#[inline(always)]
fn take_handled(sk: u64, new: u64) -> bool {
    let Some(h) = HANDLED.get_ptr_mut(0) else { return false };
    let h = unsafe { &mut *h };
    let t = now();
    for i in 0..HANDLED_SLOTS {
        if h.state[i] == new && h.sk[i] == sk && t.wrapping_sub(h.ts[i]) < HANDLED_WINDOW_NS {
            h.state[i] = 0;
            return true;
        }
    }
    false
}

/// Transitions made by the owner's own syscall (connect, listen, close,
/// shutdown): there the task on the CPU is the one acting on the socket.
#[inline(always)]
fn in_owner_context(old: u32, new: u32) -> bool {
    match new {
        SYN_SENT | LISTEN | FIN_WAIT1 | LAST_ACK => true,
        CLOSE => old == LISTEN || old == SYN_SENT,
        _ => false,
    }
}

/// One firing of the tracepoint: socket `sk` went from `old` to `new`.
#[inline(always)]
pub(crate) fn traced_transition(sk: u64, old: u32, new: u32, cookie: u64) -> Result<(), i64> {
    let o = offsets();
    let tuple = read_state_tuple(sk, &o)?;
    if tuple.protocol != IPPROTO_TCP {
        return Ok(());
    }
    on_transition(sk, cookie, old, new, tuple, &o);
    Ok(())
}

/// Everything a TCP transition does once its socket, states and tuple are
/// known; shared with the fentry and kprobe forms (fentry.rs, kprobe.rs,
/// kfunc.rs), so the events are the same whichever hook saw the transition.
#[inline(always)]
pub fn on_transition(sk: u64, cookie: u64, old: u32, new: u32, tuple: Tuple, o: &KernelOffsets) {
    let t = now();
    let (net, netns) = net_of(sk, o);

    flush_pending_syn_recv(sk, cookie, &tuple, netns);
    let (owner, src) = resolve_owner(sk, net, old, new, &tuple, t);
    // Before 6.18 or so, a child's LISTEN -> SYN_RECV fires before its
    // remote address and port are set: report it at the socket's next
    // transition (or accept), when the tuple is complete.
    if old == LISTEN && new == SYN_RECV && tuple.dport == 0 && src == flags::OWNER_LISTENER {
        if let Some(p) = OWNERS.get_ptr_mut(&sk) {
            unsafe { (*p).flags |= PENDING_SYN_RECV };
            return;
        }
    }

    let mut b = Body {
        kind: kind::TCP_STATE,
        flags: src,
        now: t,
        netns,
        sock: sk,
        tuple,
        old_state: old,
        new_state: new,
        duration_ns: 0,
        bytes_acked: 0,
        bytes_received: 0,
        cookie,
    };
    if new == CLOSE {
        if owner.start_ns != 0 {
            b.duration_ns = t.saturating_sub(owner.start_ns);
        }
        b.bytes_acked = read(sk, o.tcp_bytes_acked).unwrap_or(0);
        b.bytes_received = read(sk, o.tcp_bytes_received).unwrap_or(0);
        b.flags |= flags::HAS_LIFETIME;
    }
    emit(&owner, &b);

    if new == CLOSE {
        let _ = OWNERS.remove(&sk);
        if old == LISTEN {
            let key = listen_key(net, tuple.sport);
            if let Some(l) = unsafe { LISTENERS.get(&key) } {
                if l.sock == sk {
                    let _ = LISTENERS.remove(&key);
                }
            }
        }
    }
}

/// `Owner::flags` bit, never in an event: this socket's LISTEN -> SYN_RECV
/// is still to be reported (see on_transition). Its time is `start_ns`.
const PENDING_SYN_RECV: u32 = 1 << 16;

/// Report a deferred LISTEN -> SYN_RECV with the tuple known now.
#[inline(always)]
pub fn flush_pending_syn_recv(sk: u64, cookie: u64, tuple: &Tuple, netns: u32) {
    let Some(p) = OWNERS.get_ptr_mut(&sk) else { return };
    let owner = unsafe { *p };
    if owner.flags & PENDING_SYN_RECV == 0 {
        return;
    }
    unsafe { (*p).flags &= !PENDING_SYN_RECV };
    let b = Body {
        kind: kind::TCP_STATE,
        flags: flags::OWNER_LISTENER,
        now: owner.start_ns,
        netns,
        sock: sk,
        tuple: *tuple,
        old_state: LISTEN,
        new_state: SYN_RECV,
        duration_ns: 0,
        bytes_acked: 0,
        bytes_received: 0,
        cookie,
    };
    emit(&owner, &b);
}

#[inline(always)]
fn listen_key(net: u64, port: u16) -> ListenKey {
    ListenKey { net, port, family: 0, _pad: 0 }
}

#[inline(always)]
fn remember(sk: u64, owner: &Owner) {
    if OWNERS.insert(&sk, owner, 0).is_err() {
        count_lost(lost::OWNERS_FULL);
    }
}

// Inlined: it takes more arguments than a BPF-to-BPF call can pass.
#[inline(always)]
fn resolve_owner(sk: u64, net: u64, old: u32, new: u32, tuple: &Tuple, t: u64) -> (Owner, u32) {
    // A fresh socket leaving CLOSE: (re)start its record.
    if old == CLOSE && (new == SYN_SENT || new == LISTEN) {
        let owner = current_owner(t);
        remember(sk, &owner);
        if new == LISTEN {
            let l = Listener { owner, sock: sk };
            if LISTENERS.insert(&listen_key(net, tuple.sport), &l, 0).is_err() {
                count_lost(lost::LISTENERS_FULL);
            }
        }
        return (owner, flags::OWNER_CURRENT);
    }
    // A child of a listener, cloned from it (old state LISTEN) in softirq:
    // the listener's owner until accept().
    if new == SYN_RECV && (old == LISTEN || old == CLOSE) {
        if let Some(l) = unsafe { LISTENERS.get(&listen_key(net, tuple.sport)) } {
            let mut owner = l.owner;
            owner.start_ns = t;
            owner.flags = flags::OWNER_LISTENER;
            remember(sk, &owner);
            return (owner, flags::OWNER_LISTENER);
        }
        return (NO_OWNER, flags::OWNER_NONE);
    }
    if let Some(owner) = unsafe { OWNERS.get(&sk) } {
        let src = owner.flags & flags::OWNER_MASK;
        return (*owner, if src == 0 { flags::OWNER_CAPTURED } else { src });
    }
    // A socket that predates the tracer: trust the CPU only in the owner's own syscall.
    if in_owner_context(old, new) {
        let mut owner = current_owner(0);
        owner.flags = flags::OWNER_CAPTURED;
        if new != CLOSE {
            remember(sk, &owner);
        }
        return (owner, flags::OWNER_CURRENT);
    }
    (NO_OWNER, flags::OWNER_NONE)
}

