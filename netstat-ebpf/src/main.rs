//! Kernel programs: TCP state changes, accepts and UDP bind/connect/close,
//! each carrying the process that owns the socket. Maps and globals live here;
//! each concern has its own module. No kernel struct offset is written here:
//! user space hands them in through `OFFSETS`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod accept;
mod emit;
mod fentry;
mod holder;
mod kfunc;
mod kprobe;
mod scratch;
mod rescue;
mod reset;
mod sock;
mod state;
mod udp;

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, RingBuf},
};
use netstat_common::{KernelOffsets, ListenKey, Listener, Owner, PendingUdp};

/// Events to user space. Size set by the loader (`--ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Drop counters, indexed by `netstat_common::lost::*`, added to atomically.
/// Memory-mapped (BPF_F_MMAPABLE) so user space reads them without a
/// syscall: a map lookup from user space raises `bpf_prog_active` on its CPU
/// (and may be preempted while it does), and every kprobe and perf-event
/// tracepoint program on that CPU is then skipped without a trace. Polling
/// these counters that way lost transitions on the kprobe backend.
#[map]
static LOST: Array<u64> = Array::with_max_entries(netstat_common::lost::COUNT, netstat_common::lost::MAP_FLAGS);

/// Socket (kernel address) -> holder and creator, captured in their own
/// context. Bounded (`--owner-map-size`; a full map is counted). An entry
/// goes when its socket reaches CLOSE, when it is destroyed
/// (tcp_destroy_sock), and is not made for a socket accepted closed; it
/// carries the socket's cookie, so a socket that reuses the memory never
/// matches it.
#[map]
static OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(65536, 0);

/// Listening port -> listener's owner, for accepted sockets before accept().
#[map]
static LISTENERS: HashMap<ListenKey, Listener> = HashMap::with_max_entries(16384, 0);

/// Thread -> UDP connect in flight, completed at the syscall's exit (or at
/// io_uring's completion of IORING_OP_CONNECT, holder.rs). A plain hash,
/// never evicting: one entry per thread at most, replaced by its next
/// connect; a full map is counted (`lost::PENDING_FULL`).
#[map]
static PENDING_UDP: HashMap<u64, PendingUdp> = HashMap::with_max_entries(8192, 0);

/// UDP sockets created since the tracer started and not bound yet: the
/// first send on one of them binds it implicitly (inet_send_prepare binds
/// before the sendmsg cgroup hook runs, so the port is known there). The
/// value is the socket again, as a plain number the verifier lets us offset.
/// A plain hash: an entry goes at the bind, the first send, the connect or
/// the socket's release (sock_release hook), whichever comes first; a full
/// map is counted.
#[map]
static UDP_UNBOUND: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);

/// Sockets whose LISTEN -> SYN_RECV is still to be reported (state.rs,
/// `PENDING_SYN_RECV`): the entry's removal decides which of two CPUs that
/// see the socket at once (its accept and its ESTABLISHED) reports it, so
/// it is reported once. Only kernels that fire that transition before the
/// child's tuple is set (6.1, 6.12) make entries; each goes at the report,
/// or at the socket's destruction.
#[map]
static SYN_RECV_DUE: HashMap<u64, u8> = HashMap::with_max_entries(8192, 0);

/// Accepts whose socket had no cookie yet (accept() on one CPU returned
/// the child while the softirq that completes its handshake, and gives it
/// its cookie, still ran on another): socket -> the acceptor, reported at
/// the socket's next transition with the cookie (state.rs,
/// `Owner::accept_due`). Each goes at that report or at the socket's
/// destruction; a full map is counted and the accept reported at once.
#[map]
static ACCEPT_DUE: HashMap<u64, Owner> = HashMap::with_max_entries(1024, 0);

#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::unknown());

/// The loader's own TGID: its events are not reported.
#[unsafe(no_mangle)]
static SELF_TGID: Global<u32> = Global::new(0);

/// Wake user space when this many bytes are waiting; otherwise it polls on a
/// short timer (one wake-up per event is what makes tracers slow).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(256 * 1024);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
