//! Reads of kernel structs at offsets resolved from BTF by user space.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_socket_cookie, bpf_probe_read_kernel};
use netstat_common::{AF_INET, AF_INET6, KernelOffsets, OFFSET_UNKNOWN};

use crate::OFFSETS;

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    OFFSETS.load()
}

#[inline(always)]
pub fn read<T: Copy>(base: u64, off: u32) -> Result<T, i64> {
    if base == 0 || off == OFFSET_UNKNOWN {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.map_err(|e| e as i64)
}

/// A socket's 4-tuple and identity as read from `struct sock`.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub family: u16,
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[inline(always)]
pub fn read_tuple(sk: u64, o: &KernelOffsets) -> Result<Tuple, i64> {
    let family: u16 = read(sk, o.sk_family)?;
    let protocol: u16 = read(sk, o.sk_protocol)?;
    let sport: u16 = read(sk, o.sk_num)?;
    let dport_be: u16 = read(sk, o.sk_dport)?;
    let mut t = Tuple {
        family,
        protocol,
        sport,
        dport: u16::from_be(dport_be),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        let s: [u8; 4] = read(sk, o.sk_rcv_saddr)?;
        let d: [u8; 4] = read(sk, o.sk_daddr)?;
        t.saddr[..4].copy_from_slice(&s);
        t.daddr[..4].copy_from_slice(&d);
    } else if family == AF_INET6 {
        t.saddr = read(sk, o.sk_v6_rcv_saddr)?;
        t.daddr = read(sk, o.sk_v6_daddr)?;
    }
    Ok(t)
}

/// The tuple as `sock:inet_sock_set_state` reports it: the local end from
/// `inet_sock` (inet_sport, inet_saddr), which survive the unhashing that
/// zeroes `skc_num` before a socket's CLOSE is traced.
#[inline(always)]
pub fn read_state_tuple(sk: u64, o: &KernelOffsets) -> Result<Tuple, i64> {
    let mut t = read_tuple(sk, o)?;
    let sport_be: u16 = read(sk, o.inet_sport)?;
    t.sport = u16::from_be(sport_be);
    if t.family == AF_INET {
        let s: [u8; 4] = read(sk, o.inet_saddr)?;
        t.saddr[..4].copy_from_slice(&s);
    }
    Ok(t)
}

/// The socket's cookie, assigned now if it had none (sock_gen_cookie, as
/// SO_COOKIE and sock_diag do). Only for BTF-typed programs (tp_btf,
/// fentry/fexit: BPF_PROG_TYPE_TRACING), on a `struct sock *` taken straight
/// from their context: the verifier checks that the argument is one.
#[inline(always)]
pub fn assign_cookie(sk: u64) -> u64 {
    unsafe { bpf_get_socket_cookie(sk as *mut core::ffi::c_void) }
}

/// The cookie as stored in `skc_cookie`, for programs that cannot call the
/// helper: 0 until something asked for it. The state tracepoint programs
/// ask at every transition (state.rs, kfunc.rs), so a socket that changed
/// state since the tracer started has one.
#[inline(always)]
pub fn stored_cookie(sk: u64, o: &KernelOffsets) -> u64 {
    read(sk, o.sk_cookie).unwrap_or(0)
}

/// `struct net *` of a socket (identity only) and its namespace inode.
#[inline(always)]
pub fn net_of(sk: u64, o: &KernelOffsets) -> (u64, u32) {
    let net: u64 = read(sk, o.sk_net).unwrap_or(0);
    let inum: u32 = read(net, o.net_ns_inum).unwrap_or(0);
    (net, inum)
}

/// The `struct sock *` behind file descriptor `fd` of the current task:
/// task->files->fdt->fd[fd]->private_data (struct socket *)->sk.
#[inline(always)]
pub fn sock_of_fd(fd: i64, o: &KernelOffsets) -> Result<u64, i64> {
    if fd < 0 {
        return Err(-1);
    }
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, o.task_files)?;
    let fdt: u64 = read(files, o.files_fdt)?;
    let max_fds: u32 = read(fdt, o.fdtable_max_fds)?;
    if fd as u64 >= max_fds as u64 {
        return Err(-1);
    }
    let fd_array: u64 = read(fdt, o.fdtable_fd)?;
    let file: u64 = unsafe { bpf_probe_read_kernel((fd_array + (fd as u64) * 8) as *const u64) }
        .map_err(|e| e as i64)?;
    let socket: u64 = read(file, o.file_private_data)?;
    read(socket, o.socket_sk)
}
