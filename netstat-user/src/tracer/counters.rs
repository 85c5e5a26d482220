//! The kernel's drop counters (`LOST`), read through a read-only shared
//! mapping of the array map rather than with lookup syscalls. A map lookup
//! from user space raises the kernel's `bpf_prog_active` on its CPU for the
//! duration of the call (and the call can be preempted there), and every
//! kprobe and perf-event tracepoint program that fires on that CPU meanwhile
//! is skipped, silently on kernels before 6.7. Polled every 25 ms, that was
//! enough to lose transitions on the kprobe backend.
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use netstat_common::lost;

pub struct LostCounters {
    base: NonNull<AtomicU64>,
    len: usize,
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
}

impl LostCounters {
    pub fn new(map: MapData) -> std::io::Result<Self> {
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = (lost::COUNT as usize * 8).div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<AtomicU64>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(LostCounters {
            base,
            len,
            _map: map,
        })
    }

    /// The current value of counter `idx` (a `lost::*` index).
    pub fn get(&self, idx: u32) -> u64 {
        assert!(idx < lost::COUNT);
        // The kernel adds with atomic instructions; an atomic load pairs with them.
        unsafe { &*self.base.as_ptr().add(idx as usize) }.load(Ordering::Relaxed)
    }
}

impl Drop for LostCounters {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
