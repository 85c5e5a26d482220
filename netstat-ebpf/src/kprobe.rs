//! kprobe/kretprobe forms of the fentry.rs hooks, for kernels without BTF
//! trampolines. Same handlers, same events. A kretprobe cannot see the
//! arguments, so the ones needed at return are kept per thread at entry.
//! Every program runs under `blocking_kprobes`: while one runs, the kernel
//! runs no other kprobe on its CPU, and the raw-tracepoint rescue in
//! state.rs reports the transitions a softirq makes meanwhile.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{kprobe, kretprobe, map},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use netstat_common::tcp_state::LISTEN;

use crate::{
    accept::on_accept,
    fentry::{bound, child_created, tcp_set_state},
    sock::offsets,
    state::blocking_kprobes,
};

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
    blocking_kprobes(|| {
        if let (Some(sk), Some(new)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) {
            let _ = tcp_set_state(sk, new as u32);
        }
    });
    0
}

#[kprobe]
pub fn kprobe_inet_csk_listen_start(ctx: ProbeContext) -> u32 {
    blocking_kprobes(|| {
        if let Some(sk) = ctx.arg::<u64>(0) {
            let _ = tcp_set_state(sk, LISTEN);
        }
    });
    0
}

#[kprobe]
pub fn kprobe_inet_csk_clone_lock(ctx: ProbeContext) -> u32 {
    blocking_kprobes(|| {
        stash(CLONE, ctx.arg::<u64>(0));
    });
    0
}

#[kretprobe]
pub fn kretprobe_inet_csk_clone_lock(ctx: RetProbeContext) -> u32 {
    blocking_kprobes(|| {
        let child: u64 = ctx.ret();
        if let Some(listener) = unstash(CLONE) {
            let _ = child_created(listener, child);
        }
    });
    0
}

#[kretprobe]
pub fn kretprobe_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    blocking_kprobes(|| {
        let sk: u64 = ctx.ret();
        if sk != 0 {
            let _ = on_accept(sk, &offsets());
        }
    });
    0
}

/// Entry of inet_bind and inet6_bind: keep the struct socket for the return.
#[kprobe]
pub fn kprobe_inet_bind(ctx: ProbeContext) -> u32 {
    blocking_kprobes(|| {
        stash(BIND, ctx.arg::<u64>(0));
    });
    0
}

#[kretprobe]
pub fn kretprobe_inet_bind(ctx: RetProbeContext) -> u32 {
    blocking_kprobes(|| {
        let ret: i32 = ctx.ret();
        if let Some(sock) = unstash(BIND) {
            if ret == 0 {
                let _ = bound(sock);
            }
        }
    });
    0
}
