//! Types that cross the kernel/user boundary, and nothing else.
//! Every struct is `#[repr(C)]`, integers and byte arrays only, sizes asserted:
//! the kernel writes them, user space reads them as plain bytes.
#![no_std]

pub const COMM_LEN: usize = 16;
/// Marks an offset that could not be resolved; programs skip the read.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

/// `Event::kind` values. Stable numeric ids: never renumber.
pub mod kind {
    pub const TCP_STATE: u32 = 1;
    pub const TCP_ACCEPT: u32 = 2;
    pub const UDP_BIND: u32 = 3;
    pub const UDP_CONNECT: u32 = 4;
    pub const UDP_CLOSE: u32 = 5;
    /// A TCP socket changed hands between transitions: another process
    /// sent or received on it (a socket passed over a Unix socket,
    /// inherited across fork). The event names the new holder; its states
    /// are 0.
    pub const TCP_OWNER: u32 = 6;
    /// A TCP socket sent (`flags::RESET_SENT`) or received an RST
    /// (tcp:tcp_send_reset, tcp:tcp_receive_reset). Its states are the
    /// socket's state then; the owner is the socket's captured holder.
    pub const TCP_RESET: u32 = 7;
    /// The highest kind this build knows.
    pub const LAST: u32 = TCP_RESET;
}

/// `Event::flags` bits.
pub mod flags {
    /// Where the owner came from (low 4 bits).
    pub const OWNER_MASK: u32 = 0xf;
    /// No owner known (a socket that predates the tracer, seen in softirq).
    pub const OWNER_NONE: u32 = 0;
    /// Captured earlier in the owner's own context (connect, listen, accept).
    pub const OWNER_CAPTURED: u32 = 1;
    /// The task on the CPU, in a transition that runs in the owner's syscall.
    pub const OWNER_CURRENT: u32 = 2;
    /// An accepted socket before accept(): the listener's owner.
    pub const OWNER_LISTENER: u32 = 3;
    /// The UDP bind was implicit (first send or connect on an unbound socket).
    pub const IMPLICIT_BIND: u32 = 1 << 4;
    /// `duration_ns`, `bytes_acked`, `bytes_received` are filled in.
    pub const HAS_LIFETIME: u32 = 1 << 5;
    /// `kind::TCP_RESET`: the socket sent the RST (else it received one).
    pub const RESET_SENT: u32 = 1 << 6;
}

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;
    pub const NEW_SYN_RECV: u32 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// One kernel event. Ports in host byte order; addresses in network order
/// (IPv4 in the first 4 bytes). `sock` is the kernel socket address, used
/// only as an opaque identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    pub flags: u32,
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub ts_ns: u64,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    /// Network namespace inode number, 0 when unknown.
    pub netns: u32,
    pub comm: [u8; COMM_LEN],
    pub sock: u64,
    pub family: u16,
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub old_state: u32,
    pub new_state: u32,
    /// Nanoseconds since the socket was first seen (on its last transition).
    pub duration_ns: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// The kernel's socket cookie (`SO_COOKIE`, sock_diag's `idiag_cookie`,
    /// `bpf_get_socket_cookie`): with `netns`, a connection's identity.
    /// 0 when unknown (a cookie the kernel had not assigned yet).
    pub cookie: u64,
    /// The holder's start: its thread-group leader's `start_boottime`
    /// (ns after boot, as /proc/PID/stat's starttime counts it). With
    /// `tgid`, one process even after its PID is reused. 0 when unknown.
    pub pid_start_ns: u64,
    /// The process that created or accepted the socket, 0 when unknown (a
    /// socket that predates the tracer).
    pub creator_tgid: u32,
    /// On a transition to CLOSE: the socket's pending error (`sk_err`:
    /// ETIMEDOUT for a timeout, ECONNREFUSED, ECONNRESET), else 0.
    pub sk_err: u32,
    pub creator_start_ns: u64,
    pub creator_comm: [u8; COMM_LEN],
    /// The holder's lineage and place (`Owner::cgroup_id` and after).
    pub cgroup_id: u64,
    pub parent_tgid: u32,
    pub ns_pid: u32,
    pub parent_comm: [u8; COMM_LEN],
}
pub const EVENT_SIZE: usize = 208;
const _: () = assert!(core::mem::size_of::<Event>() == EVENT_SIZE);

impl Event {
    pub const fn zeroed() -> Self {
        Event {
            kind: 0,
            flags: 0,
            ts_ns: 0,
            tgid: 0,
            pid: 0,
            uid: 0,
            netns: 0,
            comm: [0; COMM_LEN],
            sock: 0,
            family: 0,
            protocol: 0,
            sport: 0,
            dport: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            old_state: 0,
            new_state: 0,
            duration_ns: 0,
            bytes_acked: 0,
            bytes_received: 0,
            cookie: 0,
            pid_start_ns: 0,
            creator_tgid: 0,
            sk_err: 0,
            creator_start_ns: 0,
            creator_comm: [0; COMM_LEN],
            cgroup_id: 0,
            parent_tgid: 0,
            ns_pid: 0,
            parent_comm: [0; COMM_LEN],
        }
    }
}

/// The process holding a socket now, and the one that created or accepted
/// it, captured in their own context. Value of `OWNERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The holder: process, acting thread, uid, flags (`flags::OWNER_*`),
    /// its thread-group leader's comm and start (`Event::pid_start_ns`).
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
    /// When the socket was first seen (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    pub pid_start_ns: u64,
    /// The socket this entry is for: an entry whose cookie is not the
    /// socket's is stale (its memory was reused) and is never matched.
    /// 0 = not known when the entry was made.
    pub cookie: u64,
    /// The creator (or acceptor); 0 when unknown.
    pub creator_tgid: u32,
    /// 1 while an accept of this socket waits in `ACCEPT_DUE` for the
    /// socket's cookie (written by plain stores only, never read-modify-
    /// write, so it cannot be lost to a concurrent update of `flags`).
    pub accept_due: u32,
    pub creator_start_ns: u64,
    pub creator_comm: [u8; COMM_LEN],
    /// The holder's cgroup v2 id (`bpf_get_current_cgroup_id`: the inode
    /// of its cgroup directory), 0 when unknown. Captured with the holder,
    /// so it survives the process's exit.
    pub cgroup_id: u64,
    /// The holder's parent (`real_parent`'s process and its leader's
    /// comm), 0 when unknown.
    pub parent_tgid: u32,
    /// The holder's PID in its own PID namespace (what `ps` shows in a
    /// container), 0 when unknown.
    pub ns_pid: u32,
    pub parent_comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<Owner>() == 120);

/// Key of `LISTENERS`: a listening port in one network namespace, as user
/// space can compute it (the namespace's inode, the port), so listeners
/// that predate the tracer are seeded at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenKey {
    /// Network namespace inode (`/proc/PID/ns/net`).
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<ListenKey>() == 8);

/// Value of `LISTENERS`: the owner of the port's latest listener, and how
/// many listeners share the port (SO_REUSEPORT, or one per address): the
/// entry goes with the last of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub owner: Owner,
    pub count: u64,
}
const _: () = assert!(core::mem::size_of::<Listener>() == 128);

/// Value of `PENDING_UDP`, keyed by thread id: a UDP connect seen in the
/// cgroup hook, completed at the connect syscall's exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingUdp {
    pub sock: u64,
    /// `flags::IMPLICIT_BIND` when the socket had no local port yet.
    pub flags: u32,
    pub _pad: u32,
    /// The socket's cookie, from the cgroup hook (the syscall-exit
    /// tracepoint that completes the record cannot ask for it).
    pub cookie: u64,
}
const _: () = assert!(core::mem::size_of::<PendingUdp>() == 24);

/// Offsets handed to the programs at load time (global `OFFSETS`). Syscall
/// tracepoint fields come from tracefs format files, struct members from vmlinux BTF;
/// `OFFSET_UNKNOWN` where unresolved. Nothing here is written in the source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // syscalls:sys_exit_* record
    pub sys_exit_ret: u32,
    // fd -> sock walk
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    // struct sock
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_net: u32,
    pub sk_protocol: u32,
    pub sk_type: u32,
    pub net_ns_inum: u32,
    // struct tcp_sock
    pub tcp_bytes_acked: u32,
    pub tcp_bytes_received: u32,
    /// `sock.__sk_common.skc_state` (1 byte): the old state for the fentry
    /// and kprobe forms of the TCP state hook (took the former padding slot).
    pub sk_state: u32,
    /// `inet_sock.inet_sport` / `inet_saddr`: what the tracepoint reports as
    /// the local end. `skc_num` is already 0 when a socket reaches CLOSE
    /// (inet_put_port runs before the state is stored and traced).
    pub inet_sport: u32,
    pub inet_saddr: u32,
    /// `sock.__sk_common.skc_cookie` (8 bytes), for the programs that cannot
    /// call `bpf_get_socket_cookie` (raw and syscall tracepoints, kprobes):
    /// 0 in memory until the kernel assigns it (sock_gen_cookie).
    pub sk_cookie: u32,
    /// `sock.sk_lock.owned`: 1 while a task holds the socket lock (its own
    /// syscall, or the backlog it processes on release): a transition
    /// then runs in the context of a task acting on the socket.
    pub sk_lock_owned: u32,
    // struct task_struct: the holder's process, as /proc and ss name it
    pub task_flags: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_start_boottime: u32,
    /// The holder's parent and its PID in its own namespace:
    /// `task_struct.real_parent`, `.tgid`, `.thread_pid`; `pid.level`,
    /// `pid.numbers`; `upid.nr` and `struct upid`'s size.
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_nr: u32,
    pub upid_size: u32,
    /// `io_kiocb.opcode` (1 byte) and `io_accept.file_slot` (4 bytes; the
    /// accept's command data sits at the start of its `io_kiocb`), for the
    /// io_uring completion hook.
    pub io_kiocb_opcode: u32,
    pub io_accept_file_slot: u32,
    // io_uring:io_uring_complete record (tracefs format): `req`, `res`
    pub io_complete_req: u32,
    pub io_complete_res: u32,
    /// `sock.sk_err` (int): why a socket closed (a timeout, a reset).
    pub sk_err: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 41 * 4);

impl KernelOffsets {
    pub const fn unknown() -> Self {
        let u = OFFSET_UNKNOWN;
        KernelOffsets {
            sys_exit_ret: u,
            task_files: u,
            files_fdt: u,
            fdtable_fd: u,
            fdtable_max_fds: u,
            file_private_data: u,
            socket_sk: u,
            sk_family: u,
            sk_num: u,
            sk_dport: u,
            sk_rcv_saddr: u,
            sk_daddr: u,
            sk_v6_rcv_saddr: u,
            sk_v6_daddr: u,
            sk_net: u,
            sk_protocol: u,
            sk_type: u,
            net_ns_inum: u,
            tcp_bytes_acked: u,
            tcp_bytes_received: u,
            sk_state: u,
            inet_sport: u,
            inet_saddr: u,
            sk_cookie: u,
            sk_lock_owned: u,
            task_flags: u,
            task_group_leader: u,
            task_comm: u,
            task_start_boottime: u,
            task_real_parent: u,
            task_tgid: u,
            task_thread_pid: u,
            pid_level: u,
            pid_numbers: u,
            upid_nr: u,
            upid_size: u,
            io_kiocb_opcode: u,
            io_accept_file_slot: u,
            io_complete_req: u,
            io_complete_res: u,
            sk_err: u,
        }
    }
}

/// Names of the maps and globals, shared so neither side spells them twice.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const OWNERS: &str = "OWNERS";
    pub const LISTENERS: &str = "LISTENERS";
    pub const PENDING_UDP: &str = "PENDING_UDP";
    pub const OFFSETS: &str = "OFFSETS";
    pub const SELF_TGID: &str = "SELF_TGID";
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
}

/// Indexes of the per-CPU `LOST` counter array.
pub mod lost {
    /// Ring buffer reservation failed: an event was dropped.
    pub const RING_FULL: u32 = 0;
    /// `OWNERS` was full: an owner could not be remembered.
    pub const OWNERS_FULL: u32 = 1;
    /// `LISTENERS` was full.
    pub const LISTENERS_FULL: u32 = 2;
    /// Not a loss: transitions the nested-state program handled because the
    /// main one was skipped for recursion (subtracted from its misses).
    pub const RESCUED: u32 = 3;
    /// Not a loss: tcp_set_state calls the kprobe form missed, or left to
    /// the check because the socket had no cookie yet (its first
    /// transition), and its tracepoint check reported instead (kfunc.rs in
    /// netstat-ebpf). A diagnostic only (`bpftool map dump`); user space
    /// does not read it.
    pub const KPROBE_RESCUED: u32 = 4;
    /// A UDP connect or send in flight could not be remembered
    /// (`PENDING_UDP` full), or an unbound UDP socket (`UDP_UNBOUND`).
    pub const PENDING_FULL: u32 = 5;
    /// A TCP transition or accept dropped because the kernel refused a read
    /// of its socket (or the accepted fd no longer named a socket).
    pub const READ_FAILED: u32 = 6;
    /// An event dropped because program runs nested deeper on a CPU than
    /// the per-CPU scratch has frames for (scratch.rs in netstat-ebpf).
    pub const TOO_DEEP: u32 = 7;
    pub const COUNT: u32 = 8;
    /// `BPF_F_MMAPABLE`: user space maps the counters instead of looking
    /// them up (a lookup syscall blinds kprobe programs on its CPU).
    pub const MAP_FLAGS: u32 = 1 << 10;
}

#[cfg(feature = "user")]
mod user;
#[cfg(feature = "user")]
pub use user::*;
