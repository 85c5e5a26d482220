//! The hooks: what each needs and the forms it can take (tracepoint or
//! cgroup, fentry/fexit, kprobe). Data only; `attach` acts on it.
use super::super::offsets;

#[derive(Clone, Copy)]
pub(super) enum Need {
    Tracefs,
    Cgroup2,
    Offsets(&'static str),
}

pub(super) struct Hook {
    pub(super) name: &'static str,
    pub(super) essential: bool,
    pub(super) needs: &'static [Need],
    /// (program, category, tracepoint)
    pub(super) tracepoints: &'static [Tracepoint],
    /// cgroup programs (sock or sock_addr), attached to the cgroup v2 root.
    pub(super) cgroup: &'static [&'static str],
    /// The same hook's tracepoints for kernels that refuse `tracepoints`,
    /// tried right after them: plain raw tracepoints where tp_btf with
    /// bpf_get_socket_cookie does not load (that helper came to tracing
    /// programs in 5.12). Same events, the cookie read from memory.
    pub(super) fallback: &'static [Tracepoint],
    /// The kernel-function forms (fentry.rs, kprobe.rs), each a complete
    /// replacement for `tracepoints` + `cgroup`, with what they need.
    pub(super) fentry: &'static [Probe],
    pub(super) kprobe: &'static [Probe],
    pub(super) probe_needs: &'static [Need],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ProbeKind {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    /// A tp_btf program beside a kprobe or fentry form (the function is the
    /// tracepoint): reports the calls they missed, and asks for cookies.
    BtfRescue,
}

/// (program, kind, kernel function)
pub(super) type Probe = (&'static str, ProbeKind, &'static str);
/// (program, category, tracepoint); category `RAW` or `BTF`, or the tracefs
/// category of a classic tracepoint.
pub(super) type Tracepoint = (&'static str, &'static str, &'static str);

/// Which form of a hook an attempt uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Form {
    Classic,
    /// `Hook::fallback`.
    Fallback,
    Fentry,
    Kprobe,
}

/// Category of a raw tracepoint in `Hook::tracepoints`.
pub(super) const RAW: &str = "raw";
/// Category of a BTF-typed raw tracepoint (tp_btf), which needs aya's parse
/// of vmlinux BTF to load.
pub(super) const BTF: &str = "btf";

use ProbeKind::{BtfRescue as RESCUE, Fentry as FEN, Fexit as FEX, Kprobe as KP, Kretprobe as KRP};

pub(super) const HOOKS: &[Hook] = &[
    Hook {
        name: "tcp_state",
        essential: true,
        // A raw tracepoint, BTF-typed (tp_btf) so that it may ask for the
        // socket's cookie: no tracefs needed, and not skipped when another
        // BPF program runs on the CPU (see state.rs).
        needs: &[Need::Offsets(offsets::SOCK)],
        tracepoints: &[
            ("inet_sock_set_state_btf", BTF, "inet_sock_set_state"),
            // Attached second: runs after the main program (see state.rs).
            ("inet_sock_set_state_btf_nested", BTF, "inet_sock_set_state"),
        ],
        cgroup: &[],
        fallback: &[
            ("inet_sock_set_state", RAW, "inet_sock_set_state"),
            ("inet_sock_set_state_nested", RAW, "inet_sock_set_state"),
        ],
        // The tracepoint sees every transition in one hook; tcp_set_state
        // misses LISTEN and a child's SYN_RECV, which need two more.
        fentry: &[
            ("fentry_tcp_set_state", FEN, "tcp_set_state"),
            ("fentry_inet_csk_listen_start", FEN, "inet_csk_listen_start"),
            ("fexit_inet_csk_clone_lock", FEX, "inet_csk_clone_lock"),
            ("fexit_inet_csk_clone_lock_nested", FEX, "inet_csk_clone_lock"),
            // The calls the two fentry programs were skipped for (one of
            // them already running on the CPU): the tracepoint in the same
            // call reports them (kfunc.rs).
            ("inet_sock_set_state_fentry_rescue", RESCUE, "inet_sock_set_state"),
        ],
        kprobe: &[
            ("kprobe_tcp_set_state", KP, "tcp_set_state"),
            ("kprobe_inet_csk_listen_start", KP, "inet_csk_listen_start"),
            ("kprobe_inet_csk_clone_lock", KP, "inet_csk_clone_lock"),
            ("kretprobe_inet_csk_clone_lock", KRP, "inet_csk_clone_lock"),
            // The calls the kprobes above missed (a kprobe handler or a
            // kprobe/perf-event program already running on the CPU): the
            // tracepoint in the same call reports them (kfunc.rs).
            ("inet_sock_set_state_kprobe_rescue", RESCUE, "inet_sock_set_state"),
        ],
        probe_needs: &[Need::Offsets(offsets::SOCK), Need::Offsets(offsets::SK_STATE)],
    },
    Hook {
        name: "tcp_accept",
        essential: false,
        needs: &[Need::Tracefs, Need::Offsets(offsets::SYS_EXIT), Need::Offsets(offsets::FD_WALK), Need::Offsets(offsets::SOCK)],
        tracepoints: &[
            ("sys_exit_accept", "syscalls", "sys_exit_accept4"),
            ("sys_exit_accept", "syscalls", "sys_exit_accept"),
        ],
        cgroup: &[],
        fallback: &[],
        // The accepted socket comes straight back (no fd walk, no syscall
        // filter), but auto, which tries every hook's tracepoint/cgroup form
        // first, takes them only where the syscall tracepoints fail:
        // accept() sleeps inside inet_csk_accept, and a sleeping call
        // returns without the fexit programs once anything attaches to or
        // detaches from the function (the kernel replaces its trampoline
        // and patches the old one to skip them), and without the
        // kretprobe once its instances (10 on 2 CPUs) are held by other
        // sleeping accepts.
        fentry: &[("fexit_inet_csk_accept", FEX, "inet_csk_accept")],
        kprobe: &[("kretprobe_inet_csk_accept", KRP, "inet_csk_accept")],
        probe_needs: &[Need::Offsets(offsets::SOCK)],
    },
    Hook {
        name: "udp_bind",
        essential: false,
        needs: &[Need::Cgroup2],
        tracepoints: &[],
        cgroup: &["udp_post_bind4", "udp_post_bind6"],
        fallback: &[],
        // post_bind is exact and needs no offsets; the probes serve hosts
        // without cgroup v2.
        fentry: &[("fexit_inet_bind", FEX, "inet_bind"), ("fexit_inet6_bind", FEX, "inet6_bind")],
        kprobe: &[
            ("kprobe_inet_bind", KP, "inet_bind"),
            ("kretprobe_inet_bind", KRP, "inet_bind"),
            ("kprobe_inet_bind", KP, "inet6_bind"),
            ("kretprobe_inet_bind", KRP, "inet6_bind"),
        ],
        probe_needs: &[Need::Offsets(offsets::SOCK), Need::Offsets(offsets::FD_WALK)],
    },
    Hook {
        name: "udp_connect",
        essential: false,
        needs: &[Need::Cgroup2, Need::Tracefs, Need::Offsets(offsets::SYS_EXIT), Need::Offsets(offsets::SOCK)],
        tracepoints: &[("sys_exit_udp", "syscalls", "sys_exit_connect")],
        cgroup: &["udp_connect4", "udp_connect6"],
        fallback: &[],
        fentry: &[],
        kprobe: &[],
        probe_needs: &[],
    },
    Hook {
        name: "udp_implicit_bind",
        essential: false,
        needs: &[Need::Cgroup2, Need::Offsets(offsets::SOCK)],
        tracepoints: &[],
        cgroup: &["udp_sock_create", "udp_sendmsg4", "udp_sendmsg6"],
        fallback: &[],
        fentry: &[],
        kprobe: &[],
        probe_needs: &[],
    },
    Hook {
        name: "udp_close",
        essential: false,
        needs: &[Need::Cgroup2, Need::Offsets(offsets::SOCK)],
        tracepoints: &[],
        cgroup: &["udp_sock_release"],
        fallback: &[],
        fentry: &[],
        kprobe: &[],
        probe_needs: &[],
    },
    Hook {
        name: "tcp_holder",
        essential: false,
        // Who sends or receives on a socket holds it (holder.rs): hand-offs
        // between transitions. The tracepoints came in 6.3; without them the
        // live table finds a hand-off in /proc at its displays.
        needs: &[Need::Offsets(offsets::SOCK)],
        tracepoints: &[("sock_send_length", RAW, "sock_send_length"), ("sock_recv_length", RAW, "sock_recv_length")],
        cgroup: &[],
        fallback: &[],
        fentry: &[],
        kprobe: &[],
        probe_needs: &[],
    },
    Hook {
        name: "tcp_reset",
        essential: false,
        // Which side reset a connection (reset.rs): without it a reset
        // connection's end says only that it closed without a FIN.
        needs: &[Need::Offsets(offsets::SOCK), Need::Offsets(offsets::SK_STATE)],
        // Each with its copy for the firings the kernel skipped it for.
        tracepoints: &[
            ("tcp_send_reset", RAW, "tcp_send_reset"),
            ("tcp_send_reset_nested", RAW, "tcp_send_reset"),
            ("tcp_receive_reset", RAW, "tcp_receive_reset"),
            ("tcp_receive_reset_nested", RAW, "tcp_receive_reset"),
        ],
        cgroup: &[],
        fallback: &[],
        fentry: &[],
        kprobe: &[],
        probe_needs: &[],
    },
    Hook {
        name: "tcp_drain",
        essential: false,
        // A socket's owner entry goes when it is freed, however it ended.
        needs: &[],
        tracepoints: &[("tcp_destroy_sock", RAW, "tcp_destroy_sock"), ("tcp_destroy_sock_nested", RAW, "tcp_destroy_sock")],
        cgroup: &[],
        fallback: &[],
        fentry: &[],
        kprobe: &[],
        probe_needs: &[],
    },
    Hook {
        name: "io_uring",
        essential: false,
        // IORING_OP_ACCEPT and IORING_OP_CONNECT never reach the syscall
        // exits the accept and UDP connect hooks use.
        needs: &[Need::Tracefs, Need::Offsets(offsets::IO_URING), Need::Offsets(offsets::FD_WALK), Need::Offsets(offsets::SOCK)],
        tracepoints: &[("io_uring_complete", "io_uring", "io_uring_complete")],
        cgroup: &[],
        fallback: &[],
        fentry: &[],
        kprobe: &[],
        probe_needs: &[],
    },
];
