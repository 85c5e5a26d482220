//! What the fentry and kprobe forms (fentry.rs, kprobe.rs) share: the
//! handlers that turn a kernel function's arguments into the tracepoint
//! path's events, the record of the calls their entry programs saw, and the
//! tracepoint checks that report the calls those programs missed. Neither
//! form's module is used by the other: both use this one.
//!
//! The checks are tp_btf programs and ask for the cookie at every firing, as
//! the tracepoint form does (state.rs): the programs that run after the
//! tracepoint in the same call (fexit and kretprobe on inet_csk_clone_lock,
//! the accept hook) read it from memory. A kprobe at tcp_set_state's entry
//! runs before the tracepoint and cannot ask: on a socket's first transition
//! it finds none and leaves that call to the check (kprobe.rs).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use netstat_common::{
    IPPROTO_TCP, IPPROTO_UDP, lost,
    tcp_state::{LISTEN, SYN_RECV},
};

use crate::{
    emit::{count_lost, now},
    sock::{assign_cookie, offsets, read, read_state_sock, read_tuple, stored_cookie},
    state::{on_transition, traced_transition},
    udp::on_explicit_bind,
};

/// A tcp_set_state(sk, new) call (or inet_csk_listen_start's store of
/// LISTEN) seen at the function's entry, where `sk_state` is still the old
/// state.
#[inline(always)]
pub fn tcp_set_state(sk: u64, new: u32, cookie: u64) -> Result<(), i64> {
    let o = offsets();
    let old: u8 = read(sk, o.sk_state)?;
    // The local end as the state tracepoint reads it (state.rs).
    let s = read_state_sock(sk, &o)?;
    if s.tuple.protocol != IPPROTO_TCP {
        return Ok(());
    }
    on_transition(sk, cookie, old as u32, new, &s, &o);
    Ok(())
}

/// `child`, returned by inet_csk_clone_lock(listener, ..), in SYN_RECV:
/// reported with the listener's tuple, as the tracepoint (which fires while
/// the child's fields are still the listener's) reports it.
#[inline(always)]
pub fn child_created(listener: u64, child: u64, cookie: u64) -> Result<(), i64> {
    if child == 0 {
        return Ok(());
    }
    let o = offsets();
    let s = read_state_sock(listener, &o)?;
    if s.tuple.protocol != IPPROTO_TCP {
        return Ok(());
    }
    on_transition(child, cookie, LISTEN, SYN_RECV, &s, &o);
    Ok(())
}

/// `struct socket *` -> its sock; a UDP bind as the post_bind hook reports
/// it. The cookie is read: the sock_create hook assigned it (udp.rs) unless
/// the socket predates the tracer.
#[inline(always)]
pub fn bound(sock: u64) -> Result<(), i64> {
    let o = offsets();
    let sk: u64 = read(sock, o.socket_sk)?;
    let mut tuple = read_tuple(sk, &o)?;
    if tuple.protocol != IPPROTO_UDP {
        return Ok(());
    }
    tuple.dport = 0;
    tuple.daddr = [0; 16];
    on_explicit_bind(sk, stored_cookie(sk, &o), tuple);
    Ok(())
}

/// The calls the kprobe programs (and the fentry form's entry programs) saw
/// and whose tracepoint has not come yet:
/// (socket, new state) -> time. Keyed by socket rather than kept per CPU:
/// between a call's entry and its tracepoint a softirq may run any number of
/// other calls on the CPU (a per-CPU ring of the last few wrapped, and the
/// tracepoint reported a call the kprobe had already reported), and a
/// preemptible kernel may move the task to another CPU. A child's clone is
/// keyed by the task (or, in softirq over an idle CPU, the CPU) instead: its
/// tracepoint names the child, which the entry kprobe cannot know. LRU: a
/// record whose tracepoint never comes must not pin an entry.
#[map]
static KPROBE_SEEN: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(8192, 0);
/// An inet_csk_clone_lock call: its tracepoint names the child, which the
/// entry kprobe cannot know; the kretprobe reports it.
pub(crate) const CLONE_MARK: u64 = 0xff;
/// A record older than this is stale (its tracepoint never came, and the
/// socket's memory may since belong to another socket).
const SEEN_WINDOW_NS: u64 = 100_000_000;

#[inline(always)]
fn seen_key(sk: u64, state: u64) -> [u64; 2] {
    if state == CLONE_MARK { [call_key(CLONE), CLONE_MARK] } else { [sk, state] }
}

#[inline(always)]
pub(crate) fn saw(sk: u64, state: u64) {
    let _ = KPROBE_SEEN.insert(&seen_key(sk, state), &now(), 0);
}

/// Whether a kprobe program saw this call (consuming its record).
#[inline(always)]
fn was_seen(sk: u64, old: u32, new: u32) -> bool {
    let state = if old == LISTEN && new == SYN_RECV { CLONE_MARK } else { new as u64 };
    let k = seen_key(sk, state);
    let Some(ts) = (unsafe { KPROBE_SEEN.get(&k) }).copied() else { return false };
    let _ = KPROBE_SEEN.remove(&k);
    now().wrapping_sub(ts) < SEEN_WINDOW_NS
}

/// Fires inside every tcp_set_state (and the LISTEN and child SYN_RECV
/// stores), after the kprobes at the function's entry: reports the calls
/// they missed, through the tracepoint path's own handler.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_kprobe_rescue(ctx: BtfTracePointContext) -> i32 {
    report_unseen(&ctx, true);
    0
}

/// The same check for the fentry form (fentry.rs), whose tcp_set_state and
/// inet_csk_listen_start programs record their calls the same way. A
/// trampoline skips a program already running on the CPU (a softirq over
/// one of them in process context); this reports those calls. Children are
/// left to the fexit pair on inet_csk_clone_lock.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_fentry_rescue(ctx: BtfTracePointContext) -> i32 {
    report_unseen(&ctx, false);
    0
}

/// Report this transition through the tracepoint path's handler unless an
/// entry program recorded it; a child's LISTEN -> SYN_RECV only when
/// `children` (otherwise another program reports children). The cookie is
/// asked for first, whatever happens next: the programs after this one read
/// it (a child's, at inet_csk_clone_lock's return).
#[inline(always)]
fn report_unseen(ctx: &BtfTracePointContext, children: bool) {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<i32>(1) as u32, ctx.arg::<i32>(2) as u32);
    let cookie = assign_cookie(sk);
    if !children && old == LISTEN && new == SYN_RECV {
        return;
    }
    if !was_seen(sk, old, new) {
        count_lost(lost::KPROBE_RESCUED);
        let _ = traced_transition(sk, old, new, Some(cookie));
    }
}

/// `call_key` functions: what a kretprobe or a record is keyed by.
pub(crate) const CLONE: u64 = 1;
pub(crate) const BIND: u64 = 2;

/// Softirq over an idle CPU runs as pid 0 on every CPU: key those by CPU.
#[inline(always)]
pub(crate) fn call_key(func: u64) -> u64 {
    let id = bpf_get_current_pid_tgid();
    let id = if id as u32 == 0 { (1 << 61) | unsafe { bpf_get_smp_processor_id() } as u64 } else { id };
    id | (func << 62)
}
