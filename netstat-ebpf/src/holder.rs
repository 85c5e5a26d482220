//! Ownership between transitions: who holds a TCP socket now, and when its
//! entry goes.
//!
//! - `sock:sock_send_length` / `sock:sock_recv_length` (6.3 and later) fire
//!   in the task that sends or receives, on every socket: a TCP socket whose
//!   sender is not its recorded holder changed hands (passed over a Unix
//!   socket, inherited across fork, a socket that predates the tracer): the
//!   sender becomes the holder, the creator stays, and one `TCP_OWNER` event
//!   says so. The common case costs one map lookup and a compare.
//! - `tcp:tcp_destroy_sock` removes the entry of a socket freed without a
//!   CLOSE transition that removed it (one accepted after it was reset).
//! - `io_uring:io_uring_complete` completes what io_uring does without the
//!   syscalls our other hooks see: an IORING_OP_ACCEPT names the acceptor
//!   (the new fd resolves through the task's file table, as accept()'s
//!   does), an IORING_OP_CONNECT of a UDP socket is reported.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use netstat_common::{AF_INET, AF_INET6, IPPROTO_TCP, OFFSET_UNKNOWN, flags, kind, lost, tcp_state};

use crate::{
    ACCEPT_DUE, OWNERS, SYN_RECV_DUE,
    accept::on_accept,
    emit::{Body, count_lost, current_is_kthread, emit, fill_current, is_self, keep_creator, no_creator, now},
    scratch::Frame,
    sock::{net_of, offsets, read, read_state_tuple, sock_of_fd, stored_cookie},
    state::PENDING_SYN_RECV,
    udp::{complete_connect, take_pending},
};

/// TP_PROTO(struct sock *sk, int ret, int flags)
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    on_data(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    on_data(ctx.arg(0));
    0
}

#[inline(always)]
fn on_data(sk: u64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let entry = OWNERS.get_ptr_mut(&sk);
    if let Some(p) = entry {
        if unsafe { (*p).tgid } == tgid {
            return;
        }
    }
    if is_self(tgid) || current_is_kthread() {
        return;
    }
    let o = offsets();
    let cookie = stored_cookie(sk, &o);
    let t = now();
    let Some(frame) = Frame::enter_or_count() else { return };
    let owner = frame.owner();
    fill_current(owner, t, entry.map(|p| unsafe { &*p }));
    match entry {
        Some(p) => {
            let prev = unsafe { &mut *p };
            if prev.cookie != 0 && cookie != 0 && prev.cookie != cookie {
                // Left by a socket whose memory this one reuses: not its own.
                return;
            }
            keep_creator(owner, prev);
            owner.flags = flags::OWNER_CAPTURED | (prev.flags & PENDING_SYN_RECV);
            owner.accept_due = prev.accept_due;
            *prev = *owner;
        }
        None => {
            // A TCP socket nobody recorded (it predates the tracer).
            let family: u16 = read(sk, o.sk_family).unwrap_or(0);
            let protocol: u16 = read(sk, o.sk_protocol).unwrap_or(0);
            if protocol != IPPROTO_TCP || (family != AF_INET && family != AF_INET6) {
                return;
            }
            // A closed socket (reset, then read) gets no entry: nothing
            // would remove it before the socket is freed.
            let state: u8 = read(sk, o.sk_state).unwrap_or(0);
            if state as u32 == tcp_state::CLOSE || state as u32 == tcp_state::LISTEN {
                return;
            }
            owner.start_ns = 0;
            owner.cookie = cookie;
            no_creator(owner);
            owner.flags = flags::OWNER_CAPTURED;
            if OWNERS.insert(&sk, &*owner, 0).is_err() {
                count_lost(lost::OWNERS_FULL);
            }
        }
    }
    let Ok(tuple) = read_state_tuple(sk, &o) else { return };
    let (_, netns) = net_of(sk, &o);
    let state: u8 = read(sk, o.sk_state).unwrap_or(0);
    let mut b = Body::plain(kind::TCP_OWNER, flags::OWNER_CURRENT, sk, cookie, tuple, t, netns);
    b.old_state = state as u32;
    b.new_state = state as u32;
    emit(owner, &b);
}

/// TP_PROTO(struct sock *sk): the socket is being freed.
#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    drain(ctx.arg(0));
    0
}

/// The same, attached after it: a socket destroyed in softirq while the
/// main program ran in process context (close()) would keep its entry. The
/// removal is idempotent, so the copy repeats it (no marks, nothing to
/// count: neither program reports an event).
#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock_nested(ctx: RawTracePointContext) -> i32 {
    drain(ctx.arg(0));
    0
}

#[inline(always)]
fn drain(sk: u64) {
    if let Some(e) = unsafe { OWNERS.get(&sk) } {
        if e.flags & PENDING_SYN_RECV != 0 {
            let _ = SYN_RECV_DUE.remove(&sk);
        }
        if e.accept_due != 0 {
            let _ = ACCEPT_DUE.remove(&sk);
        }
        let _ = OWNERS.remove(&sk);
    }
}

const IORING_OP_ACCEPT: u8 = 13;
const IORING_OP_CONNECT: u8 = 16;

/// A request's completion, in the task that completes it (the submitter,
/// or an io-wq worker of its process: both share its file table).
#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    let _ = try_io_uring_complete(&ctx);
    0
}

fn try_io_uring_complete(ctx: &TracePointContext) -> Result<(), i64> {
    let o = offsets();
    if o.io_complete_req == OFFSET_UNKNOWN || o.io_complete_res == OFFSET_UNKNOWN {
        return Err(-1);
    }
    let req: u64 = unsafe { ctx.read_at::<u64>(o.io_complete_req as usize) }.map_err(|e| e as i64)?;
    let res: i32 = unsafe { ctx.read_at::<i32>(o.io_complete_res as usize) }.map_err(|e| e as i64)?;
    let opcode: u8 = read(req, o.io_kiocb_opcode)?;
    match opcode {
        IORING_OP_ACCEPT if res >= 0 => {
            // A direct (fixed-file) accept returns a slot of the ring's own
            // table, in no process's file table: nothing to resolve.
            let slot: u32 = read(req, o.io_accept_file_slot)?;
            if slot != 0 {
                return Ok(());
            }
            let sk = sock_of_fd(res as i64, &o)?;
            // Where the accept hook is fexit/kretprobe on inet_csk_accept,
            // it saw this accept already (io_uring calls it too): the entry
            // then names this process as holder and creator.
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            if let Some(e) = unsafe { OWNERS.get(&sk) } {
                if e.flags & flags::OWNER_MASK == flags::OWNER_CAPTURED && e.tgid == tgid && e.creator_tgid == tgid {
                    return Ok(());
                }
                // ... or it saw it before the socket had its cookie: the
                // accept is due at the socket's next transition.
                if e.accept_due != 0 {
                    return Ok(());
                }
            }
            on_accept(sk, &o)
        }
        IORING_OP_CONNECT => match take_pending() {
            Some(p) => complete_connect(&p, res as i64),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}
