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
//! the same call, reports exactly the calls no record matches.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{kprobe, kretprobe, map, raw_tracepoint},
    maps::LruHashMap,
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use netstat_common::{
    lost,
    tcp_state::{LISTEN, SYN_RECV},
};

use crate::{
    accept::on_accept,
    emit::{count_lost, now},
    fentry::{bound, child_created, tcp_set_state},
    sock::offsets,
    state::try_inet_sock_set_state,
};

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
const CLONE_MARK: u64 = 0xff;
/// A record older than this is stale (its tracepoint never came, and the
/// socket's memory may since belong to another socket).
const SEEN_WINDOW_NS: u64 = 100_000_000;

#[inline(always)]
fn seen_key(sk: u64, state: u64) -> [u64; 2] {
    if state == CLONE_MARK { [key(CLONE), CLONE_MARK] } else { [sk, state] }
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
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_kprobe_rescue(ctx: RawTracePointContext) -> i32 {
    report_unseen(&ctx, true);
    0
}

/// The same check for the fentry form (fentry.rs), whose tcp_set_state and
/// inet_csk_listen_start programs record their calls the same way. A
/// trampoline skips a program already running on the CPU (a softirq over
/// one of them in process context); this reports those calls. Children are
/// left to the fexit pair on inet_csk_clone_lock.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_fentry_rescue(ctx: RawTracePointContext) -> i32 {
    report_unseen(&ctx, false);
    0
}

/// Report this transition through the tracepoint path's handler unless an
/// entry program recorded it; a child's LISTEN -> SYN_RECV only when
/// `children` (otherwise another program reports children).
#[inline(always)]
fn report_unseen(ctx: &RawTracePointContext, children: bool) {
    let sk: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as i32 as u32;
    let new = ctx.arg::<u64>(2) as i32 as u32;
    if !children && old == LISTEN && new == SYN_RECV {
        return;
    }
    if !was_seen(sk, old, new) {
        count_lost(lost::KPROBE_RESCUED);
        let _ = try_inet_sock_set_state(ctx);
    }
}

/// (thread or idle CPU, function) -> the argument its kretprobe needs (the
/// listener, or the struct socket). LRU: a return we never see must not pin
/// an entry.
#[map]
static PROBE_ARGS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

const CLONE: u64 = 1;
const BIND: u64 = 2;

/// Softirq over an idle CPU runs as pid 0 on every CPU: key those by CPU.
#[inline(always)]
fn key(func: u64) -> u64 {
    let id = bpf_get_current_pid_tgid();
    let id = if id as u32 == 0 { (1 << 61) | unsafe { bpf_get_smp_processor_id() } as u64 } else { id };
    id | (func << 62)
}

#[inline(always)]
fn stash(func: u64, arg: Option<u64>) {
    if let Some(a) = arg {
        let _ = PROBE_ARGS.insert(&key(func), &a, 0);
    }
}

#[inline(always)]
fn unstash(func: u64) -> Option<u64> {
    let k = key(func);
    let v = unsafe { PROBE_ARGS.get(&k) }.copied();
    let _ = PROBE_ARGS.remove(&k);
    v
}

#[kprobe]
pub fn kprobe_tcp_set_state(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(new)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) {
        saw(sk, new as u32 as u64);
        let _ = tcp_set_state(sk, new as u32);
    }
    0
}

#[kprobe]
pub fn kprobe_inet_csk_listen_start(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        saw(sk, LISTEN as u64);
        let _ = tcp_set_state(sk, LISTEN);
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
    if let Some(listener) = unstash(CLONE) {
        let _ = child_created(listener, child);
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
