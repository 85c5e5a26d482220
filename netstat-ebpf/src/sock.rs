//! Reads of kernel structs at offsets resolved from BTF by user space.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_socket_cookie, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use netstat_common::{AF_INET, AF_INET6, KernelOffsets, OFFSET_UNKNOWN};

use crate::OFFSETS;

/// The offsets user space wrote into the loaded object, by reference:
/// each field a program uses is one load from the (read-only, frozen) map
/// that holds them, where `Global::load` copied all 41 of them onto the BPF
/// stack at every call (164 bytes of stack, 82 instructions, per call). The
/// pointer goes through a volatile read so the compiler cannot see that it
/// points at the placeholder the source was built with and fold its values.
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    let p: *const KernelOffsets = (&OFFSETS as *const aya_ebpf::Global<KernelOffsets>).cast();
    unsafe { &*core::ptr::read_volatile(&p) }
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
    Ok(read_sock(sk, o)?.tuple)
}

/// The tuple as `sock:inet_sock_set_state` reports it: the local end from
/// `inet_sock` (inet_sport, inet_saddr), which survive the unhashing that
/// zeroes `skc_num` before a socket's CLOSE is traced.
#[inline(always)]
pub fn read_state_tuple(sk: u64, o: &KernelOffsets) -> Result<Tuple, i64> {
    Ok(read_state_sock(sk, o)?.tuple)
}

/// What a socket's hooks read of it: the tuple, the namespace and the
/// cookie as stored (0 until something asked for it).
#[derive(Clone, Copy)]
pub struct Sock {
    pub tuple: Tuple,
    /// `struct net *` (identity only): `netns` reads its inode.
    pub net: u64,
    pub cookie: u64,
}

impl Sock {
    /// The inode of the socket's network namespace (0 if unknown).
    #[inline(always)]
    pub fn netns(&self, o: &KernelOffsets) -> u32 {
        read(self.net, o.net_ns_inum).unwrap_or(0)
    }
}

/// The bytes of `struct sock` from its start (`sock_common`) that hold
/// every field read there: one probe read for all of them, instead of one
/// per field, where this kernel's layout keeps them within (it does on
/// every kernel tested: the cookie, the last, ends at 96).
const HEAD: usize = 96;

#[inline(always)]
fn head_fits(o: &KernelOffsets) -> bool {
    let end = |off: u32, size: u32| off != OFFSET_UNKNOWN && off + size <= HEAD as u32;
    end(o.sk_family, 2)
        && end(o.sk_num, 2)
        && end(o.sk_dport, 2)
        && end(o.sk_rcv_saddr, 4)
        && end(o.sk_daddr, 4)
        && end(o.sk_v6_rcv_saddr, 16)
        && end(o.sk_v6_daddr, 16)
        && end(o.sk_net, 8)
        && end(o.sk_cookie, 8)
}

/// `T` at byte `off` of the head (the caller checked it fits).
#[inline(always)]
fn at<T: Copy>(head: &[u8; HEAD_BUF], off: u32) -> T {
    unsafe { core::ptr::read_unaligned(head.as_ptr().add((off as usize) & HEAD_MASK) as *const T) }
}

/// Room for the head in a frame: the mask keeps every read in it, as the
/// verifier wants to see, whatever the offset (16 bytes is the widest).
pub const HEAD_BUF: usize = 128 + 16;
const HEAD_MASK: usize = 127;

/// A socket's tuple, namespace and stored cookie: the head in one read
/// where it fits, field by field otherwise.
#[inline(always)]
pub fn read_sock(sk: u64, o: &KernelOffsets) -> Result<Sock, i64> {
    if sk == 0 {
        return Err(-1);
    }
    let protocol: u16 = read(sk, o.sk_protocol)?;
    if head_fits(o) {
        if let Some(frame) = crate::scratch::Frame::enter() {
            let head = frame.head();
            unsafe { bpf_probe_read_kernel_buf(sk as *const u8, &mut head[..HEAD]) }.map_err(|e| e as i64)?;
            let family: u16 = at(head, o.sk_family);
            let mut t = Tuple {
                family,
                protocol,
                sport: at(head, o.sk_num),
                dport: u16::from_be(at(head, o.sk_dport)),
                saddr: [0; 16],
                daddr: [0; 16],
            };
            if family == AF_INET {
                let s: [u8; 4] = at(head, o.sk_rcv_saddr);
                let d: [u8; 4] = at(head, o.sk_daddr);
                t.saddr[..4].copy_from_slice(&s);
                t.daddr[..4].copy_from_slice(&d);
            } else if family == AF_INET6 {
                t.saddr = at(head, o.sk_v6_rcv_saddr);
                t.daddr = at(head, o.sk_v6_daddr);
            }
            return Ok(Sock { tuple: t, net: at(head, o.sk_net), cookie: at(head, o.sk_cookie) });
        }
    }
    let family: u16 = read(sk, o.sk_family)?;
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
    let net: u64 = read(sk, o.sk_net).unwrap_or(0);
    Ok(Sock { tuple: t, net, cookie: stored_cookie(sk, o) })
}

/// `read_sock` with the local end as the state tracepoint reports it
/// (see `read_state_tuple`): `inet_sport` and `inet_saddr` in one read
/// where they are within 8 bytes of each other.
#[inline(always)]
pub fn read_state_sock(sk: u64, o: &KernelOffsets) -> Result<Sock, i64> {
    let mut s = read_sock(sk, o)?;
    let t = &mut s.tuple;
    if t.family == AF_INET && o.inet_saddr != OFFSET_UNKNOWN && o.inet_sport >= o.inet_saddr && o.inet_sport + 2 <= o.inet_saddr + 8 {
        // Little-endian: byte k of memory is bits 8k.. of the value (shifts,
        // not indexing: a variable index into a stack array becomes an OR
        // on the pointer, which the verifier refuses).
        let pair: u64 = read(sk, o.inet_saddr)?;
        let k = (o.inet_sport - o.inet_saddr) & 7;
        t.sport = u16::from_be((pair >> (8 * k)) as u16);
        t.saddr[..4].copy_from_slice(&(pair as u32).to_le_bytes());
        return Ok(s);
    }
    let sport_be: u16 = read(sk, o.inet_sport)?;
    t.sport = u16::from_be(sport_be);
    if t.family == AF_INET {
        let a: [u8; 4] = read(sk, o.inet_saddr)?;
        t.saddr[..4].copy_from_slice(&a);
    }
    Ok(s)
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
