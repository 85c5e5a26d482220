//! The `--stream` text layout costs no allocation per line: an event with a
//! plain process name and its lost-events line are written straight into a
//! reused buffer (a counting allocator watches). This binary holds only
//! this test, so nothing else allocates while it counts.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use netstat_common::{AF_INET, AF_INET6, Event, flags, kind, tcp_state};
use netstat_user::{model::SockEvent, render::stream};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Set on the test's own thread while it counts: the harness's threads
    /// (output capture, the "running for over 60 s" note) allocate too.
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTING.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn event(family: u16, lifetime: bool) -> SockEvent {
    let mut e = Event::zeroed();
    e.kind = kind::TCP_STATE;
    e.flags = flags::OWNER_CAPTURED | if lifetime { flags::HAS_LIFETIME } else { 0 };
    e.tgid = 31337;
    e.comm[..5].copy_from_slice(b"nginx");
    e.family = family;
    e.protocol = 6;
    e.old_state = tcp_state::LAST_ACK;
    e.new_state = tcp_state::CLOSE;
    e.saddr[..4].copy_from_slice(&[10, 0, 0, 5]);
    e.daddr[..4].copy_from_slice(&[192, 0, 2, 10]);
    e.sport = 443;
    e.dport = 51234;
    e.duration_ns = 2_500_000;
    e.bytes_acked = 1234;
    e.bytes_received = 5678;
    SockEvent::decode(&e)
}

#[test]
fn text_lines_allocate_nothing() {
    let events = [event(AF_INET, false), event(AF_INET, true), event(AF_INET6, false), event(AF_INET6, true)];
    let mut buf = Vec::with_capacity(512);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let mut bytes = 0;
    for i in 0..10_000u64 {
        buf.clear();
        stream::write_event(&mut buf, &events[i as usize % 4], 1_795_478_400_000_000_000);
        stream::write_lost(&mut buf, 1_795_478_400_000_000_000 + i as i128, "ring_full", i);
        bytes += buf.len();
    }
    COUNTING.with(|c| c.set(false));
    let n = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert!(bytes > 10_000 * 100);
    assert_eq!(n, 0, "{n} allocations for 10000 event and lost lines");
    let text = String::from_utf8(buf).unwrap();
    assert!(text.ends_with("LOST 9999 events (ring_full)\n"), "{text}");
}
