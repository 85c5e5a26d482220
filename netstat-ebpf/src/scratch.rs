//! Per-CPU room for the large values of one program run (an owner, a
//! listener), off the BPF stack: on kernels without private BPF stacks (6.1)
//! the verifier allows 512 bytes for the deepest chain of calls, and an
//! `Owner` is 88 bytes. Runs nest on a CPU (a softirq's program over a
//! process-context one), always last-in first-out: each run takes the next
//! slot and gives it back when its `Frame` drops.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use netstat_common::{Listener, Owner};

const SLOTS: u64 = 4;

#[repr(C)]
pub struct Slot {
    pub owner: Owner,
    pub listener: Listener,
    /// The head of a socket, read at once (sock.rs).
    pub head: [u8; crate::sock::HEAD_BUF],
    /// The fields of a task the owner capture reads, at once (emit.rs).
    pub task: [u8; crate::emit::TASK_BUF],
    /// The transition being handled (state.rs).
    pub transition: crate::state::Transition,
}

#[repr(C)]
pub struct Scratch {
    slots: [Slot; SLOTS as usize],
    depth: u64,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A slot held for one run.
pub struct Frame {
    scratch: *mut Scratch,
    slot: *mut Slot,
}

impl Frame {
    /// The next free slot, None when runs nest deeper than `SLOTS` (never
    /// seen: a process context, a softirq and an NMI at most).
    #[inline(always)]
    pub fn enter() -> Option<Frame> {
        let scratch = SCRATCH.get_ptr_mut(0)?;
        let depth = unsafe { (*scratch).depth };
        if depth >= SLOTS {
            return None;
        }
        unsafe { (*scratch).depth = depth + 1 };
        let slot = unsafe { (*scratch).slots.as_mut_ptr().add(depth as usize) };
        Some(Frame { scratch, slot })
    }

    /// `enter`, for a run that cannot report its event without a frame:
    /// when none is left, that event is counted lost (`lost::TOO_DEEP`).
    #[inline(always)]
    pub fn enter_or_count() -> Option<Frame> {
        let frame = Frame::enter();
        if frame.is_none() {
            crate::emit::count_lost(netstat_common::lost::TOO_DEEP);
        }
        frame
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn owner(&self) -> &mut Owner {
        unsafe { &mut (*self.slot).owner }
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn head(&self) -> &mut [u8; crate::sock::HEAD_BUF] {
        unsafe { &mut (*self.slot).head }
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn transition(&self) -> &mut crate::state::Transition {
        unsafe { &mut (*self.slot).transition }
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn task(&self) -> &mut [u8; crate::emit::TASK_BUF] {
        unsafe { &mut (*self.slot).task }
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn listener(&self) -> &mut Listener {
        unsafe { &mut (*self.slot).listener }
    }
}

impl Drop for Frame {
    #[inline(always)]
    fn drop(&mut self) {
        unsafe { (*self.scratch).depth = (*self.scratch).depth.saturating_sub(1) };
    }
}
