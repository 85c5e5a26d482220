//! Owner capture and event emission shared by every program.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns},
};
use netstat_common::{Event, Owner, lost};

use crate::{EVENTS, LOST, SELF_TGID, WAKEUP_BYTES, sock::Tuple};

/// The task on the CPU, as an owner.
#[inline(always)]
pub fn current_owner(now: u64) -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    Owner {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        flags: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        start_ns: now,
    }
}

#[inline(always)]
pub fn is_self(tgid: u32) -> bool {
    tgid != 0 && tgid == SELF_TGID.load()
}

#[inline(always)]
pub fn count_lost(idx: u32) {
    if let Some(p) = LOST.get_ptr_mut(idx) {
        // Shared by all CPUs: an atomic add (BPF_ATOMIC). The BPF target has
        // no compare-and-swap, so core's AtomicU64 offers no fetch_add.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, 1);
        }
    }
}

/// Everything an event carries besides the header the owner fills in.
pub struct Body {
    pub kind: u32,
    pub flags: u32,
    pub now: u64,
    pub netns: u32,
    pub sock: u64,
    pub tuple: Tuple,
    pub old_state: u32,
    pub new_state: u32,
    pub duration_ns: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub cookie: u64,
}

impl Body {
    /// An event with no state change and no lifetime (accept, UDP).
    #[inline(always)]
    pub fn plain(kind: u32, flags: u32, sock: u64, cookie: u64, tuple: Tuple, now: u64, netns: u32) -> Body {
        Body {
            kind,
            flags,
            now,
            netns,
            sock,
            tuple,
            old_state: 0,
            new_state: 0,
            duration_ns: 0,
            bytes_acked: 0,
            bytes_received: 0,
            cookie,
        }
    }
}

/// Reserve, fill and submit one event; a full ring is counted, never silent.
#[inline(always)]
pub fn emit(owner: &Owner, b: &Body) {
    if is_self(owner.tgid) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(lost::RING_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).kind = b.kind;
        (*ev).flags = b.flags;
        (*ev).ts_ns = b.now;
        (*ev).tgid = owner.tgid;
        (*ev).pid = owner.pid;
        (*ev).uid = owner.uid;
        (*ev).netns = b.netns;
        (*ev).comm = owner.comm;
        (*ev).sock = b.sock;
        (*ev).family = b.tuple.family;
        (*ev).protocol = b.tuple.protocol;
        (*ev).sport = b.tuple.sport;
        (*ev).dport = b.tuple.dport;
        (*ev).saddr = b.tuple.saddr;
        (*ev).daddr = b.tuple.daddr;
        (*ev).old_state = b.old_state;
        (*ev).new_state = b.new_state;
        (*ev).duration_ns = b.duration_ns;
        (*ev).bytes_acked = b.bytes_acked;
        (*ev).bytes_received = b.bytes_received;
        (*ev).cookie = b.cookie;
    }
    // Batched wake-ups: only when enough is waiting; user space also polls.
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

pub const NO_OWNER: Owner = Owner {
    tgid: 0,
    pid: 0,
    uid: u32::MAX,
    flags: 0,
    comm: [0; 16],
    start_ns: 0,
};
