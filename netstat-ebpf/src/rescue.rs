//! Firings the kernel skipped for recursion, handled by a second copy of
//! the program. A raw tracepoint (tp_btf included) program is skipped when
//! it already runs on the CPU: a softirq that fires the same tracepoint
//! while the program runs in process context (close(), connect(), the
//! backlog a task processes as it releases the socket lock) would lose that
//! firing. Each such hook attaches a copy right after its main program; in
//! every firing the main program marks what it handled (socket, tag), and
//! the copy handles exactly the firings it finds no mark for, counting
//! each (`lost::RESCUED`): user space subtracts those from the main
//! programs' `recursion_misses`, so what remains is what both missed.
//!
//! Marks are per CPU: tracepoint probes run with preemption off, so both
//! programs of one firing run on one CPU. At most one firing is in flight
//! below the current one (process context under a softirq). A copy skipped
//! because it ran itself (the softirq came while the outer copy ran) leaves
//! its firing's mark behind, always newer than the outer firing's own mark:
//! so a copy that takes its mark clears every newer one (leftovers of the
//! firings that interrupted it), a full table evicts its newest mark (never
//! the one still awaited), and a mark older than `WINDOW_NS` is free. A mark
//! names the socket by address and cookie: a leftover never matches a
//! socket that reuses the memory.
use aya_ebpf::{macros::map, maps::PerCpuArray};

use crate::emit::now;

const SLOTS: usize = 8;
/// A mark older than this is stale (its copy never ran).
const WINDOW_NS: u64 = 100_000_000;

#[repr(C)]
pub struct Marks {
    sk: [u64; SLOTS],
    cookie: [u64; SLOTS],
    /// What was handled, never 0 (0 marks a free slot).
    tag: [u64; SLOTS],
    ts: [u64; SLOTS],
}

#[map]
static HANDLED: PerCpuArray<Marks> = PerCpuArray::with_max_entries(1, 0);

/// Tag of a TCP transition into `new` (TCP states start at 1).
#[inline(always)]
pub fn transition_tag(new: u32) -> u64 {
    new as u64
}

/// Tag of a reset sent or received.
#[inline(always)]
pub fn reset_tag(sent: bool) -> u64 {
    0x100 | sent as u64
}

/// The main program handled this firing of socket `sk` (cookie `cookie`)
/// at `t`: the time it read for the event (one clock read per firing), or
/// `now()`. Any time read during the firing orders the marks rightly: a
/// firing nested in this one reads its time later, and marks later.
#[inline(always)]
pub fn mark(sk: u64, cookie: u64, tag: u64, t: u64) {
    let Some(h) = HANDLED.get_ptr_mut(0) else { return };
    let h = unsafe { &mut *h };
    // A free or stale slot, else the newest (a leftover, see above).
    let mut pick = 0;
    let mut newest = 0;
    for i in 0..SLOTS {
        if h.tag[i] == 0 || t.wrapping_sub(h.ts[i]) >= WINDOW_NS {
            pick = i;
            break;
        }
        if h.ts[i] >= newest {
            newest = h.ts[i];
            pick = i;
        }
    }
    h.sk[pick] = sk;
    h.cookie[pick] = cookie;
    h.tag[pick] = tag;
    h.ts[pick] = t;
}

/// Whether the main program handled this firing (consuming its mark); if
/// not, the caller handles it, and it is counted as rescued. `cookie` is
/// asked for only when a mark names the socket.
#[inline(always)]
pub fn take(sk: u64, tag: u64, cookie: impl Fn() -> u64) -> bool {
    let Some(h) = HANDLED.get_ptr_mut(0) else { return false };
    let h = unsafe { &mut *h };
    let t = now();
    let mut found = None;
    for i in 0..SLOTS {
        if h.tag[i] == tag && h.sk[i] == sk && t.wrapping_sub(h.ts[i]) < WINDOW_NS && h.cookie[i] == cookie() {
            found = Some(h.ts[i]);
            h.tag[i] = 0;
            break;
        }
    }
    let Some(mine) = found else {
        crate::emit::count_lost(netstat_common::lost::RESCUED);
        return false;
    };
    for i in 0..SLOTS {
        if h.ts[i] > mine {
            h.tag[i] = 0;
        }
    }
    true
}
