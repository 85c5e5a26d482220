//! Owner capture and event emission shared by every program.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
};
use netstat_common::{Event, KernelOffsets, OFFSET_UNKNOWN, Owner, lost};

use crate::{
    EVENTS, LOST, SELF_TGID, WAKEUP_BYTES,
    sock::{Tuple, offsets, read},
};

/// `task_struct.flags` bit of a kernel thread (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

/// The task on the CPU, as the holder and creator of a socket, into
/// `out`: its process as /proc and `ss` name it (the thread-group leader's
/// comm and start time), and the acting thread. `start_ns` (when the socket
/// was first seen) is `now`; the caller sets `cookie`.
/// `known`: the socket's entry, whose namespace PID is reused when it
/// names the same process.
#[inline(always)]
pub fn fill_current(out: &mut Owner, now: u64, known: Option<&Owner>) {
    let o = offsets();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let task = unsafe { bpf_get_current_task() };
    out.tgid = tgid;
    out.pid = pid_tgid as u32;
    out.uid = bpf_get_current_uid_gid() as u32;
    out.flags = 0;
    out.start_ns = now;
    out.cookie = 0;
    out.creator_tgid = tgid;
    out.accept_due = 0;
    out.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let thread_pid = fill_task(out, task, o);
    out.creator_start_ns = out.pid_start_ns;
    out.creator_comm = out.comm;
    // A process's PID in its namespace never changes: read it once.
    match known {
        Some(k) if k.tgid == tgid && k.pid_start_ns == out.pid_start_ns && k.ns_pid != 0 => out.ns_pid = k.ns_pid,
        _ => out.ns_pid = ns_pid_of(thread_pid),
    }
}

/// The task fields `fill_current` reads (tgid, real_parent, group_leader,
/// thread_pid, start_boottime, comm) lie within this many bytes of each
/// other on every kernel tested (about 500 on 6.18): read as one window
/// per task, not one probe read per field (issue 14: each probe read
/// costs about 50 ns here). Kernels that spread them wider take the
/// per-field path.
const TASK_WIN: usize = 512;
const TASK_MASK: usize = TASK_WIN - 1;
/// Room for a window in a frame: the mask keeps every read in it, as the
/// verifier wants to see (16 bytes is the widest field).
pub const TASK_BUF: usize = TASK_WIN + 16;

/// Where the window starts in `task_struct`, None when the fields are
/// not all known or do not fit in one window.
#[inline(always)]
fn task_window(o: &KernelOffsets) -> Option<u32> {
    let (a, b, c, d, e, f) =
        (o.task_tgid, o.task_real_parent, o.task_group_leader, o.task_thread_pid, o.task_start_boottime, o.task_comm);
    if a == OFFSET_UNKNOWN || b == OFFSET_UNKNOWN || c == OFFSET_UNKNOWN || d == OFFSET_UNKNOWN || e == OFFSET_UNKNOWN || f == OFFSET_UNKNOWN {
        return None;
    }
    let lo = a.min(b).min(c).min(d).min(e).min(f);
    // comm (16 bytes) is the widest; the others are 4 or 8.
    let hi = a.max(b).max(c).max(d).max(e).max(f) + 16;
    (hi - lo <= TASK_WIN as u32).then_some(lo)
}

/// `T` at task offset `off` of a window that starts at `lo`.
#[inline(always)]
fn win_at<T: Copy>(w: &[u8; TASK_BUF], lo: u32, off: u32) -> T {
    unsafe { core::ptr::read_unaligned(w.as_ptr().add((off.wrapping_sub(lo) as usize) & TASK_MASK) as *const T) }
}

/// The 16 bytes of a comm at task offset `off` of a window into `to`,
/// copied in place (no temporary on the BPF stack).
#[inline(always)]
fn win_comm(w: &[u8; TASK_BUF], lo: u32, off: u32, to: &mut [u8; 16]) {
    unsafe { core::ptr::copy_nonoverlapping(w.as_ptr().add((off.wrapping_sub(lo) as usize) & TASK_MASK), to.as_mut_ptr(), 16) }
}

#[inline(always)]
fn read_window(task: u64, lo: u32, w: &mut [u8; TASK_BUF]) -> bool {
    task != 0 && unsafe { bpf_probe_read_kernel_buf((task + lo as u64) as *const u8, &mut w[..TASK_WIN]) }.is_ok()
}

/// The process fields of `out` (comm, pid_start_ns, parent) from windows:
/// the acting thread's, its leader's when it is not the leader, the
/// parent's. Returns the leader's `thread_pid`; None (nothing written)
/// where windows cannot be used, for `fill_task_by_field`.
#[inline(always)]
fn fill_task_windowed(out: &mut Owner, task: u64, o: &KernelOffsets) -> Option<u64> {
    let lo = task_window(o)?;
    let frame = crate::scratch::Frame::enter()?;
    let w = frame.task();
    if !read_window(task, lo, w) {
        return None;
    }
    let leader: u64 = win_at(w, lo, o.task_group_leader);
    if leader != task && !read_window(leader, lo, w) {
        return None;
    }
    win_comm(w, lo, o.task_comm, &mut out.comm);
    out.pid_start_ns = win_at(w, lo, o.task_start_boottime);
    let thread_pid: u64 = win_at(w, lo, o.task_thread_pid);
    let parent: u64 = win_at(w, lo, o.task_real_parent);
    out.parent_tgid = 0;
    out.parent_comm = [0; 16];
    if read_window(parent, lo, w) {
        out.parent_tgid = win_at(w, lo, o.task_tgid);
        let pleader: u64 = win_at(w, lo, o.task_group_leader);
        if pleader == parent || pleader == 0 {
            win_comm(w, lo, o.task_comm, &mut out.parent_comm);
        } else {
            out.parent_comm = read(pleader, o.task_comm).unwrap_or([0; 16]);
        }
    }
    Some(thread_pid)
}

/// The process fields of `out` for the acting thread `task`: windows
/// where they can be used, else field by field. Returns the leader's
/// `thread_pid` (0 if unknown). Not inlined: its frame is a sibling of its
/// callers' others, so every program's deepest chain of calls stays within
/// the BPF stack (512 bytes in all on kernels without private stacks).
#[inline(never)]
fn fill_task(out: &mut Owner, task: u64, o: &KernelOffsets) -> u64 {
    match fill_task_windowed(out, task, o) {
        Some(p) => p,
        None => fill_task_by_field(out, task, o),
    }
}

/// `fill_task_windowed` one probe read per field. Returns the leader's
/// `thread_pid` (0 if unknown).
#[inline(always)]
fn fill_task_by_field(out: &mut Owner, task: u64, o: &KernelOffsets) -> u64 {
    let leader: u64 = read(task, o.task_group_leader).unwrap_or(0);
    out.comm = match read::<[u8; 16]>(leader, o.task_comm) {
        Ok(c) => c,
        Err(_) => bpf_get_current_comm().unwrap_or([0; 16]),
    };
    out.pid_start_ns = read(leader, o.task_start_boottime).unwrap_or(0);
    fill_parent(out, leader);
    read(leader, o.task_thread_pid).unwrap_or(0)
}

/// The parent of thread-group leader `leader` now (`real_parent`, as
/// /proc/PID/stat's ppid names it: read each time, since a process whose
/// parent exits is reparented).
#[inline(always)]
fn fill_parent(out: &mut Owner, leader: u64) {
    let o = offsets();
    out.parent_tgid = 0;
    out.parent_comm = [0; 16];
    if let Ok(parent) = read::<u64>(leader, o.task_real_parent) {
        out.parent_tgid = read(parent, o.task_tgid).unwrap_or(0);
        let pleader: u64 = read(parent, o.task_group_leader).unwrap_or(parent);
        out.parent_comm = read(pleader, o.task_comm).unwrap_or([0; 16]);
    }
}

/// The PID in its own PID namespace (`thread_pid->numbers[level].nr`, the
/// last NSpid of /proc/PID/status) of the leader whose `thread_pid` is
/// `pid`, 0 when unknown.
#[inline(always)]
fn ns_pid_of(pid: u64) -> u32 {
    let o = offsets();
    let Ok(level) = read::<u32>(pid, o.pid_level) else { return 0 };
    if o.pid_numbers == u32::MAX || o.upid_nr == u32::MAX || o.upid_size == u32::MAX || level > 32 {
        return 0;
    }
    let at = o.pid_numbers as u64 + level as u64 * o.upid_size as u64 + o.upid_nr as u64;
    read(pid, at as u32).unwrap_or(0)
}

/// Whether the task on the CPU is a kernel thread (a kworker doing a
/// delayed fput, unix garbage collection): it never holds a socket.
#[inline(always)]
pub fn current_is_kthread() -> bool {
    let task = unsafe { bpf_get_current_task() };
    read::<u32>(task, offsets().task_flags).is_ok_and(|f| f & PF_KTHREAD != 0)
}

/// `owner` as the new holder of a socket whose entry was `prev`: the
/// creator, the first-seen time and the cookie are the socket's own.
#[inline(always)]
pub fn keep_creator(owner: &mut Owner, prev: &Owner) {
    owner.start_ns = prev.start_ns;
    owner.cookie = prev.cookie;
    owner.creator_tgid = prev.creator_tgid;
    owner.creator_start_ns = prev.creator_start_ns;
    owner.creator_comm = prev.creator_comm;
}

/// `owner` with no creator known (a socket that predates the tracer).
#[inline(always)]
pub fn no_creator(owner: &mut Owner) {
    owner.creator_tgid = 0;
    owner.creator_start_ns = 0;
    owner.creator_comm = [0; 16];
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
    pub sk_err: u32,
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
            sk_err: 0,
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
        (*ev).pid_start_ns = owner.pid_start_ns;
        (*ev).creator_tgid = owner.creator_tgid;
        (*ev).sk_err = b.sk_err;
        (*ev).creator_start_ns = owner.creator_start_ns;
        (*ev).creator_comm = owner.creator_comm;
        (*ev).cgroup_id = owner.cgroup_id;
        (*ev).parent_tgid = owner.parent_tgid;
        (*ev).ns_pid = owner.ns_pid;
        (*ev).parent_comm = owner.parent_comm;
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
    pid_start_ns: 0,
    cookie: 0,
    creator_tgid: 0,
    accept_due: 0,
    creator_start_ns: 0,
    creator_comm: [0; 16],
    cgroup_id: 0,
    parent_tgid: 0,
    ns_pid: 0,
    parent_comm: [0; 16],
};
