//! Builds the `KernelOffsets` handed to the programs: struct members from
//! vmlinux BTF, tracepoint fields from tracefs format files. Each group that
//! cannot be resolved is reported, so the probe plan can skip what needs it.
use netstat_common::{KernelOffsets, OFFSET_UNKNOWN};

use super::{btf::Btf, tracefs::Format};

/// Offsets, plus what could not be resolved (group -> reason).
pub struct Resolved {
    pub offsets: KernelOffsets,
    pub missing: Vec<(&'static str, String)>,
}

impl Resolved {
    pub fn missing(&self, group: &str) -> Option<&str> {
        self.missing.iter().find(|(g, _)| *g == group).map(|(_, r)| r.as_str())
    }
}

/// Groups the probe plan asks about.
pub const SOCK: &str = "struct sock";
pub const FD_WALK: &str = "fd to socket walk";
pub const SYS_EXIT: &str = "syscalls:sys_exit_* format";
/// The socket's state byte, read by the fentry/kprobe forms of tcp_state.
pub const SK_STATE: &str = "struct sock state";
/// io_uring's request opcode and accept slot, and its completion record.
pub const IO_URING: &str = "io_uring request";

pub fn resolve(btf: &Btf, sys_exit: Option<&Format>, io_complete: Option<&Format>) -> Resolved {
    let mut o = KernelOffsets::unknown();
    let mut missing = Vec::new();

    let sock = (|| -> Result<(), String> {
        let m = |p: &str, w: u32| btf.member_sized(p, w).map_err(|e| e.to_string());
        o.sk_family = m("sock.__sk_common.skc_family", 2)?;
        o.sk_num = m("sock.__sk_common.skc_num", 2)?;
        o.sk_dport = m("sock.__sk_common.skc_dport", 2)?;
        o.sk_rcv_saddr = m("sock.__sk_common.skc_rcv_saddr", 4)?;
        o.sk_daddr = m("sock.__sk_common.skc_daddr", 4)?;
        o.sk_v6_rcv_saddr = m("sock.__sk_common.skc_v6_rcv_saddr", 16)?;
        o.sk_v6_daddr = m("sock.__sk_common.skc_v6_daddr", 16)?;
        o.sk_protocol = m("sock.sk_protocol", 2)?;
        o.sk_type = m("sock.sk_type", 2)?;
        o.inet_sport = m("inet_sock.inet_sport", 2)?;
        o.inet_saddr = m("inet_sock.inet_saddr", 4)?;
        Ok(())
    })();
    if let Err(e) = sock {
        missing.push((SOCK, e));
    }
    // Optional extras: namespace and byte counts degrade to 0 when absent.
    if let Ok(off) = btf.member_sized("sock.__sk_common.skc_net", 8) {
        o.sk_net = off;
        o.net_ns_inum = btf.member_sized("net.ns.inum", 4).unwrap_or(OFFSET_UNKNOWN);
    }
    o.tcp_bytes_acked = btf.member_sized("tcp_sock.bytes_acked", 8).unwrap_or(OFFSET_UNKNOWN);
    o.tcp_bytes_received = btf.member_sized("tcp_sock.bytes_received", 8).unwrap_or(OFFSET_UNKNOWN);
    // Why a socket closed (0 in events without it).
    o.sk_err = btf.member_sized("sock.sk_err", 4).unwrap_or(OFFSET_UNKNOWN);
    // Where the programs cannot ask for the cookie, events carry 0 without it.
    o.sk_cookie = btf.member_sized("sock.__sk_common.skc_cookie", 8).unwrap_or(OFFSET_UNKNOWN);
    match btf.member_sized("sock.__sk_common.skc_state", 1) {
        Ok(off) => o.sk_state = off,
        Err(e) => missing.push((SK_STATE, e.to_string())),
    }

    // Who is acting on a socket, and as which process: without them the
    // programs fall back to the transition's kind, the thread's comm and no
    // start time.
    o.sk_lock_owned = btf.member_sized("sock.sk_lock.owned", 4).unwrap_or(OFFSET_UNKNOWN);
    o.task_flags = btf.member_sized("task_struct.flags", 4).unwrap_or(OFFSET_UNKNOWN);
    o.task_group_leader = btf.member_sized("task_struct.group_leader", 8).unwrap_or(OFFSET_UNKNOWN);
    o.task_comm = btf.member_sized("task_struct.comm", 16).unwrap_or(OFFSET_UNKNOWN);
    o.task_start_boottime = btf.member_sized("task_struct.start_boottime", 8).unwrap_or(OFFSET_UNKNOWN);
    // The holder's parent and its PID in its own namespace (events carry 0
    // without them).
    o.task_real_parent = btf.member_sized("task_struct.real_parent", 8).unwrap_or(OFFSET_UNKNOWN);
    o.task_tgid = btf.member_sized("task_struct.tgid", 4).unwrap_or(OFFSET_UNKNOWN);
    o.task_thread_pid = btf.member_sized("task_struct.thread_pid", 8).unwrap_or(OFFSET_UNKNOWN);
    o.pid_level = btf.member_sized("pid.level", 4).unwrap_or(OFFSET_UNKNOWN);
    // `numbers` is `struct upid numbers[]` (or `[1]` before 5.x): its
    // elements are `struct upid`, whose size comes from BTF too.
    o.pid_numbers = btf.member("pid.numbers").map_or(OFFSET_UNKNOWN, |(off, _)| off);
    o.upid_nr = btf.member_sized("upid.nr", 4).unwrap_or(OFFSET_UNKNOWN);
    o.upid_size = btf.struct_size("upid").unwrap_or(OFFSET_UNKNOWN);

    let io = (|| -> Result<(), String> {
        let m = |p: &str, w: u32| btf.member_sized(p, w).map_err(|e| e.to_string());
        o.io_kiocb_opcode = m("io_kiocb.opcode", 1)?;
        // The accept's command data overlays the start of its request.
        o.io_accept_file_slot = m("io_accept.file_slot", 4)?;
        let f = io_complete.ok_or("io_uring:io_uring_complete format not readable")?;
        o.io_complete_req = f.field("req", 8).map_err(|e| e.to_string())?;
        o.io_complete_res = f.field("res", 4).map_err(|e| e.to_string())?;
        Ok(())
    })();
    if let Err(e) = io {
        missing.push((IO_URING, e));
    }

    let walk = (|| -> Result<(), String> {
        let m = |p: &str, w: u32| btf.member_sized(p, w).map_err(|e| e.to_string());
        o.task_files = m("task_struct.files", 8)?;
        o.files_fdt = m("files_struct.fdt", 8)?;
        o.fdtable_fd = m("fdtable.fd", 8)?;
        o.fdtable_max_fds = m("fdtable.max_fds", 4)?;
        o.file_private_data = m("file.private_data", 8)?;
        o.socket_sk = m("socket.sk", 8)?;
        Ok(())
    })();
    if let Err(e) = walk {
        missing.push((FD_WALK, e));
    }

    match sys_exit.map(|f| f.field("ret", 8)) {
        Some(Ok(off)) => o.sys_exit_ret = off,
        Some(Err(e)) => missing.push((SYS_EXIT, e.to_string())),
        None => missing.push((SYS_EXIT, "format file not readable".into())),
    }
    Resolved { offsets: o, missing }
}
