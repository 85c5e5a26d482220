//! RSTs a TCP socket sends or receives (`tcp:tcp_send_reset`,
//! `tcp:tcp_receive_reset`, as raw tracepoints: both take the socket
//! first), so a connection's end says which side reset it. Fires only on
//! resets: nothing on the common path. A reset with no full socket (a
//! reply for a port nobody listens on, a TIME_WAIT or request socket) ends
//! no connection we report, and is left out.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use netstat_common::{IPPROTO_TCP, flags, kind, tcp_state};

use crate::{
    OWNERS, rescue,
    emit::{Body, NO_OWNER, current_is_kthread, emit, fill_current, now},
    scratch::Frame,
    sock::{offsets, read, read_state_sock, stored_cookie},
};

/// TP_PROTO(const struct sock *sk, const struct sk_buff *skb, ...)
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: RawTracePointContext) -> i32 {
    handled(ctx.arg(0), true);
    0
}

/// TP_PROTO(struct sock *sk)
#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    handled(ctx.arg(0), false);
    0
}

/// Both fire in process context (close() of a socket with unread data, the
/// backlog of a released lock) and in softirq over it: each has a copy
/// attached after it for the firings the kernel skipped it for (rescue.rs).
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset_nested(ctx: RawTracePointContext) -> i32 {
    rescued(ctx.arg(0), true);
    0
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset_nested(ctx: RawTracePointContext) -> i32 {
    rescued(ctx.arg(0), false);
    0
}

#[inline(always)]
fn handled(sk: u64, sent: bool) {
    on_reset(sk, sent);
    rescue::mark(sk, stored_cookie(sk, &offsets()), rescue::reset_tag(sent), now());
}

#[inline(always)]
fn rescued(sk: u64, sent: bool) {
    if !rescue::take(sk, rescue::reset_tag(sent), || stored_cookie(sk, &offsets())) {
        on_reset(sk, sent);
    }
}

#[inline(always)]
fn on_reset(sk: u64, sent: bool) {
    if sk == 0 {
        return;
    }
    let o = offsets();
    let state = read::<u8>(sk, o.sk_state).unwrap_or(0) as u32;
    if matches!(state, 0 | tcp_state::TIME_WAIT | tcp_state::NEW_SYN_RECV | tcp_state::LISTEN) {
        return;
    }
    let Ok(s) = read_state_sock(sk, &o) else { return };
    if s.tuple.protocol != IPPROTO_TCP {
        return;
    }
    let t = now();
    let mut b = Body::plain(kind::TCP_RESET, 0, sk, s.cookie, s.tuple, t, s.netns(&o));
    b.old_state = state;
    b.new_state = state;
    if sent {
        b.flags |= flags::RESET_SENT;
    }
    // The holder as captured; once the socket is closed (an abort sends
    // its RST after the CLOSE that removed the entry) the task closing it,
    // when it holds the socket's lock.
    if let Some(e) = unsafe { OWNERS.get(&sk) } {
        b.flags |= flags::OWNER_CAPTURED;
        emit(e, &b);
        return;
    }
    let owned = read::<i32>(sk, o.sk_lock_owned).is_ok_and(|v| v != 0);
    if owned && !current_is_kthread() {
        if let Some(frame) = Frame::enter() {
            let owner = frame.owner();
            fill_current(owner, t, None);
            b.flags |= flags::OWNER_CURRENT;
            emit(owner, &b);
            return;
        }
    }
    emit(&NO_OWNER, &b);
}
