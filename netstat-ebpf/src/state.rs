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
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use netstat_common::{
    IPPROTO_TCP, KernelOffsets, ListenKey, Listener, Owner, flags, kind, lost,
    tcp_state::*,
};

use crate::{
    ACCEPT_DUE, LISTENERS, OWNERS, SYN_RECV_DUE, rescue,
    emit::{Body, NO_OWNER, count_lost, current_is_kthread, emit, fill_current, keep_creator, no_creator, now},
    scratch::Frame,
    sock::{Sock, Tuple, assign_cookie, offsets, read, read_state_sock, stored_cookie},
};

/// TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<i32>(1) as u32, ctx.arg::<i32>(2) as u32);
    let cookie = assign_cookie(sk);
    let t = traced_transition(sk, old, new, Some(cookie)).unwrap_or_else(|_| now());
    rescue::mark(sk, cookie, rescue::transition_tag(new), t);
    0
}

/// The same tracepoint, attached after the main program: handles the
/// firings the kernel skipped the main program for (rescue.rs). (A flag
/// raised while the main program ran left a window at either end of its
/// run, where the kernel counted it running but the flag was down: a
/// softirq there was lost; marks per firing have no such window.)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf_nested(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<i32>(1) as u32, ctx.arg::<i32>(2) as u32);
    if !rescue::take(sk, rescue::transition_tag(new), || assign_cookie(sk)) {
        let cookie = assign_cookie(sk);
        let _ = traced_transition(sk, old, new, Some(cookie));
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
    let t = traced_transition(sk, old, new, None).unwrap_or_else(|_| now());
    rescue::mark(sk, stored_cookie(sk, &offsets()), rescue::transition_tag(new), t);
    0
}

/// The raw tracepoint form of `inet_sock_set_state_btf_nested`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (old, new) = (ctx.arg::<u64>(1) as i32 as u32, ctx.arg::<u64>(2) as i32 as u32);
    if !rescue::take(sk, rescue::transition_tag(new), || stored_cookie(sk, &offsets())) {
        let _ = traced_transition(sk, old, new, None);
    }
    0
}

/// Transitions made by the owner's own syscall (connect, listen, close,
/// shutdown): the rule for kernels whose socket lock cannot be read.
#[inline(always)]
fn in_owner_context(old: u32, new: u32) -> bool {
    match new {
        SYN_SENT | LISTEN | FIN_WAIT1 | LAST_ACK => true,
        CLOSE => old == LISTEN || old == SYN_SENT,
        _ => false,
    }
}

/// Whether the task on the CPU is acting on the socket: it holds the
/// socket's lock (`sk_lock.owned`: its own syscall, or the backlog it
/// processes as it releases the lock; a softirq or timer never owns it, it
/// defers to the owner instead), and it is not a kernel thread.
#[inline(always)]
fn acting_on(sk: u64, old: u32, new: u32, o: &KernelOffsets) -> bool {
    let owned = match read::<i32>(sk, o.sk_lock_owned) {
        Ok(v) => v != 0,
        Err(_) => in_owner_context(old, new),
    };
    owned && !current_is_kthread()
}

/// One firing of the tracepoint: socket `sk` went from `old` to `new`;
/// `cookie` where the program asked for it, else the one stored. The time
/// of the event, when it was a TCP socket's.
#[inline(always)]
pub(crate) fn traced_transition(sk: u64, old: u32, new: u32, cookie: Option<u64>) -> Result<u64, i64> {
    let o = offsets();
    let s = read_state_sock(sk, &o).inspect_err(|_| count_lost(lost::READ_FAILED))?;
    if s.tuple.protocol != IPPROTO_TCP {
        return Err(0);
    }
    Ok(on_transition(sk, cookie.unwrap_or(s.cookie), old, new, &s, &o))
}

/// Everything a TCP transition does once its socket, states and tuple are
/// known; shared with the fentry and kprobe forms (fentry.rs, kprobe.rs,
/// kfunc.rs), so the events are the same whichever hook saw the transition.
/// Returns the event's time.
#[inline(always)]
pub fn on_transition(sk: u64, cookie: u64, old: u32, new: u32, s: &Sock, o: &KernelOffsets) -> u64 {
    let t = now();
    let tuple = s.tuple;
    let netns = s.netns(o);

    // The socket's entry, looked up once for the whole transition.
    let entry = OWNERS.get_ptr_mut(&sk);
    if let Some(p) = entry {
        if unsafe { (*p).flags } & PENDING_SYN_RECV != 0 || unsafe { (*p).accept_due } != 0 {
            flush_pending(sk, unsafe { &mut *p }, cookie, &tuple, netns);
        }
    }
    let Some(frame) = Frame::enter_or_count() else { return t };
    // In the frame, not on the BPF stack: this program's deepest chain of
    // calls (here, resolve_owner, fill_task) must stay within 512 bytes.
    let tr = frame.transition();
    *tr = Transition { sk, cookie, t, netns, old, new, sport: tuple.sport as u32, dport: tuple.dport as u32 };
    let tr = &*tr;
    let owner = frame.owner();
    *owner = NO_OWNER;
    let src = resolve_owner(tr, entry.map(|p| unsafe { &*p }), owner);
    // A listener starting: its owner names the port's children.
    if old == CLOSE && new == LISTEN && src == flags::OWNER_CURRENT {
        listen_started(netns, tuple.sport, owner, frame.listener());
    }
    // Before 6.18 or so, a child's LISTEN -> SYN_RECV fires before its
    // remote address and port are set: report it at the socket's next
    // transition (or accept), when the tuple is complete.
    if old == LISTEN && new == SYN_RECV && tuple.dport == 0 && src == flags::OWNER_LISTENER {
        if let Some(p) = OWNERS.get_ptr_mut(&sk) {
            if SYN_RECV_DUE.insert(&sk, &0, 0).is_ok() {
                unsafe { (*p).flags |= PENDING_SYN_RECV };
                return t;
            }
            // Full: reported now, without its remote end.
            count_lost(lost::PENDING_FULL);
        }
    }

    report(tr, &tuple, owner, src);
    t
}

/// The event of a transition whose owner is known, and what a CLOSE ends.
/// Not inlined, as `resolve_owner`: the two frames are siblings, so the
/// deepest chain of calls stays within the BPF stack (512 bytes in all on
/// kernels without private stacks, such as 6.1).
#[inline(never)]
fn report(tr: &Transition, tuple: &Tuple, owner: &Owner, src: u32) {
    let o = offsets();
    let (sk, t, old, new) = (tr.sk, tr.t, tr.old, tr.new);
    let mut b = Body {
        kind: kind::TCP_STATE,
        flags: src,
        now: t,
        netns: tr.netns,
        sock: sk,
        tuple: *tuple,
        old_state: old,
        new_state: new,
        duration_ns: 0,
        bytes_acked: 0,
        bytes_received: 0,
        cookie: tr.cookie,
        sk_err: 0,
    };
    if new == CLOSE {
        if owner.start_ns != 0 {
            b.duration_ns = t.saturating_sub(owner.start_ns);
        }
        b.bytes_acked = read(sk, o.tcp_bytes_acked).unwrap_or(0);
        b.bytes_received = read(sk, o.tcp_bytes_received).unwrap_or(0);
        // tcp_write_err and tcp_reset set it before tcp_done's CLOSE.
        b.sk_err = read::<i32>(sk, o.sk_err).unwrap_or(0) as u32;
        b.flags |= flags::HAS_LIFETIME;
    }
    emit(owner, &b);

    if new == CLOSE {
        let _ = OWNERS.remove(&sk);
        if old == LISTEN {
            listen_stopped(tr.netns, tuple.sport);
        }
    }
}

/// Atomic add on a counter in a map value (BPF_ATOMIC; the generic BPF
/// CPU cannot return the old value, so the caller reads it after).
#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, v);
    }
}

/// A listener on `port` started: its owner names the port's children until
/// they are accepted. Listeners sharing a port are counted, so the entry
/// goes with the last one. Not inlined: its value has a frame of its own.
#[inline(never)]
fn listen_started(netns: u32, port: u16, owner: &Owner, l: &mut Listener) {
    let key = listen_key(netns, port);
    if let Some(l) = LISTENERS.get_ptr_mut(&key) {
        unsafe { (*l).owner = *owner };
        atomic_add(unsafe { &mut (*l).count }, 1);
        return;
    }
    l.owner = *owner;
    l.count = 1;
    if LISTENERS.insert(&key, l, BPF_NOEXIST as u64).is_err() {
        // Another CPU made it first, or the map is full.
        match LISTENERS.get_ptr_mut(&key) {
            Some(l) => {
                atomic_add(unsafe { &mut (*l).count }, 1);
            }
            None => count_lost(lost::LISTENERS_FULL),
        }
    }
}

#[inline(always)]
fn listen_stopped(netns: u32, port: u16) {
    let key = listen_key(netns, port);
    if let Some(l) = LISTENERS.get_ptr_mut(&key) {
        // Adding u64::MAX subtracts one. Two listeners closing at once may
        // both see 0 and both remove: the same end.
        atomic_add(unsafe { &mut (*l).count }, u64::MAX);
        if unsafe { core::ptr::read_volatile(&(*l).count) } == 0 {
            let _ = LISTENERS.remove(&key);
        }
    }
}

/// `Owner::flags` bit, never in an event: this socket's LISTEN -> SYN_RECV
/// is still to be reported (see on_transition). Its time is `start_ns`.
pub(crate) const PENDING_SYN_RECV: u32 = 1 << 16;

/// Report what waited for this socket's next transition (see
/// `flush_pending`), for callers that have not looked its entry up.
#[inline(always)]
pub fn flush_pending_syn_recv(sk: u64, cookie: u64, tuple: &Tuple, netns: u32) {
    let Some(p) = OWNERS.get_ptr_mut(&sk) else { return };
    let owner = unsafe { &mut *p };
    if owner.flags & PENDING_SYN_RECV != 0 || owner.accept_due != 0 {
        flush_pending(sk, owner, cookie, tuple, netns);
    }
}

/// What waited for this socket's next transition, on its entry `owner`: a
/// deferred LISTEN -> SYN_RECV with the tuple known now (in the listener's
/// owner's name), then a deferred accept with the cookie known now (the
/// acceptor becomes the entry's holder). Not inlined: its frame is a
/// sibling of the others (see `report`).
#[inline(never)]
fn flush_pending(sk: u64, owner: &mut Owner, cookie: u64, tuple: &Tuple, netns: u32) {
    if owner.flags & PENDING_SYN_RECV != 0 {
        owner.flags &= !PENDING_SYN_RECV;
        // Two CPUs may see the flag at once (accept() beside the softirq
        // that establishes the child): the one whose removal succeeds
        // reports it.
        if SYN_RECV_DUE.remove(&sk).is_ok() {
            let mut b = Body::plain(kind::TCP_STATE, flags::OWNER_LISTENER, sk, cookie, *tuple, owner.start_ns, netns);
            b.old_state = LISTEN;
            b.new_state = SYN_RECV;
            emit(owner, &b);
        }
    }
    if owner.accept_due != 0 {
        owner.accept_due = 0;
        let Some(a) = (unsafe { ACCEPT_DUE.get(&sk) }) else { return };
        let start = owner.start_ns;
        *owner = *a;
        owner.start_ns = start;
        owner.cookie = cookie;
        owner.flags = flags::OWNER_CAPTURED;
        if ACCEPT_DUE.remove(&sk).is_ok() {
            emit(owner, &Body::plain(kind::TCP_ACCEPT, flags::OWNER_CURRENT, sk, cookie, *tuple, now(), netns));
        }
    }
}

#[inline(always)]
fn listen_key(netns: u32, port: u16) -> ListenKey {
    ListenKey { netns, port, _pad: 0 }
}

#[inline(always)]
fn remember(sk: u64, owner: &Owner) {
    if OWNERS.insert(&sk, owner, 0).is_err() {
        count_lost(lost::OWNERS_FULL);
    }
}

/// The entry of socket `sk` with cookie `cookie`, if it is that socket's:
/// an entry left by a socket whose memory `sk` reuses is never matched.
#[inline(always)]
pub fn entry_of(sk: u64, cookie: u64) -> Option<&'static Owner> {
    let e = unsafe { OWNERS.get(&sk) }?;
    is_own(e, cookie).then_some(e)
}

/// Whether entry `e` is the socket's with cookie `cookie`, not one left by
/// a socket whose memory it reuses (0 on either side: not known).
#[inline(always)]
fn is_own(e: &Owner, cookie: u64) -> bool {
    e.cookie == 0 || cookie == 0 || e.cookie == cookie
}

/// What `resolve_owner` needs of a transition, passed by reference (a
/// BPF-to-BPF call takes five arguments at most).
#[repr(C)]
pub(crate) struct Transition {
    sk: u64,
    cookie: u64,
    t: u64,
    netns: u32,
    old: u32,
    new: u32,
    sport: u32,
    /// 0 while a child's LISTEN -> SYN_RECV fires before its fields are
    /// its own (before 6.18 or so): its cookie may still be the listener's.
    dport: u32,
}

/// The owner of a transition's socket into `out`, and where it came from.
/// Not inlined: its frame of its own keeps every program's stack within
/// the BPF limit.
#[inline(never)]
fn resolve_owner(tr: &Transition, entry: Option<&Owner>, out: &mut Owner) -> u32 {
    let (sk, cookie, t, netns, old, new) = (tr.sk, tr.cookie, tr.t, tr.netns, tr.old, tr.new);
    let port = tr.sport as u16;
    let o = offsets();
    // A fresh socket leaving CLOSE: (re)start its record, the caller is
    // its creator. A kernel thread's socket (an in-kernel client) has no
    // holder.
    if old == CLOSE && (new == SYN_SENT || new == LISTEN) {
        if current_is_kthread() {
            return flags::OWNER_NONE;
        }
        fill_current(out, t, None);
        out.cookie = cookie;
        remember(sk, out);
        return flags::OWNER_CURRENT;
    }
    // A child of a listener, cloned from it (old state LISTEN) in softirq:
    // the listener's owner (holder and creator) until accept().
    if new == SYN_RECV && (old == LISTEN || old == CLOSE) {
        if let Some(l) = unsafe { LISTENERS.get(&listen_key(netns, port)) } {
            *out = l.owner;
            out.start_ns = t;
            // A child traced before its fields are its own (6.1) may carry
            // the listener's cookie: the entry's is then unknown (matches
            // the cookie the child gets).
            out.cookie = if tr.dport != 0 { cookie } else { 0 };
            out.flags = flags::OWNER_LISTENER;
            remember(sk, out);
            return flags::OWNER_LISTENER;
        }
        return flags::OWNER_NONE;
    }
    let entry = entry.filter(|e| is_own(e, cookie));
    // A task acting on the socket (close, shutdown, connect, the backlog of
    // its own call) holds it now: it becomes the holder, the creator stays.
    if acting_on(sk, old, new, &o) {
        fill_current(out, t, entry);
        match entry {
            Some(e) => {
                keep_creator(out, e);
                if e.cookie == 0 {
                    out.cookie = cookie;
                }
                out.flags = flags::OWNER_CAPTURED | (e.flags & PENDING_SYN_RECV);
                out.accept_due = e.accept_due;
                if new != CLOSE && e.tgid != out.tgid {
                    remember(sk, out);
                }
            }
            None => {
                // Predates the tracer: its creator is not known.
                out.start_ns = 0;
                out.cookie = cookie;
                no_creator(out);
                out.flags = flags::OWNER_CAPTURED;
                if new != CLOSE {
                    remember(sk, out);
                }
            }
        }
        return flags::OWNER_CURRENT;
    }
    if let Some(e) = entry {
        *out = *e;
        let src = e.flags & flags::OWNER_MASK;
        return if src == 0 { flags::OWNER_CAPTURED } else { src };
    }
    flags::OWNER_NONE
}
