//! The mechanism each hook uses, per kernel and backend, against one table
//! (`EXPECTED`): a silent fallback (fexit to the syscall tracepoints, the
//! tracepoint to fentry) fails here instead of passing unnoticed. Runs on
//! the host (every backend the table lists for this kernel) and in each VM
//! run of `cargo xtask vm-test` (that run's backend, NETSTAT_TEST_BACKEND).
//! Reads `netstat --probe-report --json` only through `parse_probe_report`.
use std::process::Command;

/// A mechanism as the probe report names it: its kind (`raw tracepoint`,
/// `fexit`, `cgroup`, ...) and what it attaches to (function, tracepoint or
/// cgroup hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mech {
    kind: &'static str,
    name: &'static str,
}

const fn m(kind: &'static str, name: &'static str) -> Mech {
    Mech { kind, name }
}

/// tcp_state's tracepoint form, which auto takes first and `--backend
/// tracepoint` forces: a tp_btf program (the raw tracepoint is its fallback,
/// for kernels without BTF-typed tracepoints).
const TCP_STATE_TRACEPOINT: Mech = m("tp_btf", "inet_sock_set_state");
/// The fentry and kprobe forms' check for the calls their programs missed.
const TCP_STATE_CHECK: Mech = m("missed-call check on tp_btf", "inet_sock_set_state");

/// What a kernel and backend must give.
enum Plan {
    /// Per hook, the mechanisms it must use; the first is the one it chose
    /// (the report lists it first). Hooks not listed are not checked.
    Hooks(&'static [(&'static str, &'static [Mech])]),
    /// netstat must refuse to trace (exit status 2), saying this.
    Refused(&'static str),
}

const SYSCALL_ACCEPT: &[Mech] = &[m("tracepoint", "syscalls:sys_exit_accept4"), m("tracepoint", "syscalls:sys_exit_accept")];
const CGROUP_BIND: &[Mech] = &[m("cgroup", "post_bind4"), m("cgroup", "post_bind6")];

/// (kernels as major.minor, backend, plan). Debian's 6.1 and 6.12 are the VM
/// suite's; 6.18 is the build machines' (no kprobes, fentry loads refused).
const EXPECTED: &[(&[&str], &str, Plan)] = &[
    (
        &["6.1", "6.12"],
        "auto",
        Plan::Hooks(&[("tcp_state", &[TCP_STATE_TRACEPOINT]), ("tcp_accept", SYSCALL_ACCEPT), ("udp_bind", CGROUP_BIND)]),
    ),
    (
        &["6.1", "6.12"],
        "fentry",
        Plan::Hooks(&[
            (
                "tcp_state",
                &[
                    m("fentry", "tcp_set_state"),
                    m("fentry", "inet_csk_listen_start"),
                    m("fexit", "inet_csk_clone_lock"),
                    TCP_STATE_CHECK,
                ],
            ),
            ("tcp_accept", &[m("fexit", "inet_csk_accept")]),
            ("udp_bind", &[m("fexit", "inet_bind"), m("fexit", "inet6_bind")]),
        ]),
    ),
    (
        &["6.1", "6.12"],
        "kprobe",
        Plan::Hooks(&[
            (
                "tcp_state",
                &[
                    m("kprobe", "tcp_set_state"),
                    m("kprobe", "inet_csk_listen_start"),
                    m("kprobe", "inet_csk_clone_lock"),
                    m("kretprobe", "inet_csk_clone_lock"),
                    TCP_STATE_CHECK,
                ],
            ),
            ("tcp_accept", &[m("kretprobe", "inet_csk_accept")]),
            (
                "udp_bind",
                &[m("kprobe", "inet_bind"), m("kretprobe", "inet_bind"), m("kprobe", "inet6_bind"), m("kretprobe", "inet6_bind")],
            ),
        ]),
    ),
    (
        &["6.1", "6.12", "6.18"],
        "tracepoint",
        Plan::Hooks(&[("tcp_state", &[TCP_STATE_TRACEPOINT]), ("tcp_accept", SYSCALL_ACCEPT), ("udp_bind", CGROUP_BIND)]),
    ),
    (
        &["6.18"],
        "auto",
        Plan::Hooks(&[("tcp_state", &[TCP_STATE_TRACEPOINT]), ("tcp_accept", SYSCALL_ACCEPT), ("udp_bind", CGROUP_BIND)]),
    ),
    (&["6.18"], "fentry", Plan::Refused("cannot trace tcp_state")),
    (&["6.18"], "kprobe", Plan::Refused("cannot trace tcp_state")),
];

/// One hook's line of the probe report.
#[derive(Debug, PartialEq)]
struct HookPlan {
    hook: String,
    attached: bool,
    /// (kind, name), in the report's order; for a skipped hook, every form it tried.
    mechanisms: Vec<(String, String)>,
}

/// `netstat --probe-report --json`'s hooks. The one place that knows the
/// report's shape: `hooks[]` with `hook`, `status` and `mechanism`
/// (`KIND NAME[, KIND NAME...]`, the forms tried and passed over after
/// ` | `; NAME is the last word).
fn parse_probe_report(json: &str) -> Vec<HookPlan> {
    let doc: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("probe report is not JSON ({e}): {json}"));
    let hooks = doc["hooks"].as_array().unwrap_or_else(|| panic!("probe report without hooks: {json}"));
    hooks
        .iter()
        .map(|h| {
            let mechanisms = h["mechanism"]
                .as_str()
                .unwrap_or("")
                .split([',', '|'])
                .filter_map(|p| p.trim().rsplit_once(' '))
                .map(|(k, n)| (k.trim().to_string(), n.to_string()))
                .collect();
            HookPlan { hook: h["hook"].as_str().unwrap_or("").to_string(), attached: h["status"] == "attached", mechanisms }
        })
        .collect()
}

/// The running kernel as major.minor (6.1.0-56-amd64 -> 6.1).
fn kernel_series() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("reading the kernel release");
    release.trim().split(['.', '-']).take(2).collect::<Vec<_>>().join(".")
}

fn netstat_bin() -> String {
    std::env::var("NETSTAT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_netstat").to_string())
}

/// Every difference between what `backend` chose here and `plan`, or none.
fn check(backend: &str, plan: &Plan) -> Vec<String> {
    let out = Command::new(netstat_bin())
        .args(["--probe-report", "--json", "--backend", backend])
        .output()
        .expect("running netstat --probe-report");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = format!("--- netstat --probe-report --json --backend {backend} ({}):\n{stdout}{stderr}", out.status);
    let hooks = match plan {
        Plan::Refused(why) => {
            return if out.status.code() == Some(2) && stderr.contains(why) {
                Vec::new()
            } else {
                vec![format!("{backend}: expected a refusal saying {why:?} (exit 2)\n{shown}")]
            };
        }
        Plan::Hooks(h) => h,
    };
    if !out.status.success() {
        return vec![format!("{backend}: netstat failed\n{shown}")];
    }
    let report = parse_probe_report(&stdout);
    let mut wrong = Vec::new();
    for (hook, want) in hooks.iter() {
        let Some(got) = report.iter().find(|r| r.hook == *hook) else {
            wrong.push(format!("{backend} {hook}: not in the report"));
            continue;
        };
        let has = |w: &Mech| got.mechanisms.iter().any(|(k, n)| k == w.kind && n == w.name);
        let chosen = got.mechanisms.first().map(|(k, n)| format!("{k} {n}")).unwrap_or_default();
        if !got.attached {
            wrong.push(format!("{backend} {hook}: skipped, expected {} {}", want[0].kind, want[0].name));
        } else if chosen != format!("{} {}", want[0].kind, want[0].name) || !want.iter().all(has) {
            let want: Vec<String> = want.iter().map(|w| format!("{} {}", w.kind, w.name)).collect();
            let got: Vec<String> = got.mechanisms.iter().map(|(k, n)| format!("{k} {n}")).collect();
            wrong.push(format!("{backend} {hook}: chose [{}], expected [{}]", got.join(", "), want.join(", ")));
        }
    }
    if !wrong.is_empty() {
        wrong.push(shown);
    }
    wrong
}

#[test]
fn each_hook_uses_the_expected_mechanism() {
    let series = kernel_series();
    let in_vm = std::env::var_os("NETSTAT_TEST_VM").is_some();
    let for_kernel: Vec<&(&[&str], &str, Plan)> = EXPECTED.iter().filter(|(k, _, _)| k.contains(&series.as_str())).collect();
    if for_kernel.is_empty() {
        // The VM kernels must be in the table; another host's kernel may not be.
        assert!(!in_vm, "no expected probe plan for kernel {series}: add it to EXPECTED");
        eprintln!("probe_plan: no expected plan for kernel {series} in EXPECTED; not checked");
        return;
    }
    // A VM run checks its own backend; the host checks every backend listed.
    let backends: Vec<String> = match std::env::var("NETSTAT_TEST_BACKEND") {
        Ok(b) => vec![b],
        Err(_) => for_kernel.iter().map(|(_, b, _)| b.to_string()).collect(),
    };
    let mut wrong = Vec::new();
    for b in &backends {
        match for_kernel.iter().find(|(_, eb, _)| eb == b) {
            Some((_, _, plan)) => wrong.extend(check(b, plan)),
            None => wrong.push(format!("no expected probe plan for kernel {series}, backend {b}: add it to EXPECTED")),
        }
    }
    assert!(wrong.is_empty(), "probe plan on kernel {series} differs from EXPECTED:\n{}", wrong.join("\n"));
    eprintln!("probe_plan: kernel {series}, backends {}: as expected", backends.join(", "));
}

#[test]
fn the_report_is_parsed_by_kind_and_name() {
    let text = r#"{"schema":1,"hooks":[
        {"hook":"tcp_state","status":"attached","mechanism":"tp_btf inet_sock_set_state","reason":null},
        {"hook":"tcp_accept","status":"attached","mechanism":"tracepoint syscalls:sys_exit_accept4, tracepoint syscalls:sys_exit_accept","reason":"not fentry/fexit: refused"},
        {"hook":"udp_bind","status":"skipped","mechanism":"cgroup post_bind4, cgroup post_bind6 | fexit inet_bind","reason":"no cgroup v2"}
    ],"btf":"/sys/kernel/btf/vmlinux","offsets":{"a":1}}"#;
    let r = parse_probe_report(text);
    let pair = |k: &str, n: &str| (k.to_string(), n.to_string());
    assert_eq!(r.len(), 3);
    assert_eq!(r[0], HookPlan { hook: "tcp_state".into(), attached: true, mechanisms: vec![pair("tp_btf", "inet_sock_set_state")] });
    assert_eq!(
        r[1].mechanisms,
        vec![pair("tracepoint", "syscalls:sys_exit_accept4"), pair("tracepoint", "syscalls:sys_exit_accept")]
    );
    assert!(!r[2].attached);
    assert_eq!(r[2].mechanisms.len(), 3);
}

/// The ownership hooks have one form each, whatever the backend: the send
/// and receive tracepoints from Linux 6.3 on (skipped before, saying why:
/// the live table then checks owners against /proc), the socket-free and
/// io_uring completion tracepoints and the two reset tracepoints (the
/// history's close causes) everywhere the suite runs.
#[test]
fn ownership_hooks_follow_the_kernel() {
    let series = kernel_series();
    let (major, minor): (u32, u32) = match series.split_once('.') {
        Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
        None => (0, 0),
    };
    let out = Command::new(netstat_bin()).args(["--probe-report", "--json"]).output().expect("running netstat --probe-report");
    assert!(out.status.success(), "netstat --probe-report --json: {}", String::from_utf8_lossy(&out.stderr));
    let report = parse_probe_report(&String::from_utf8_lossy(&out.stdout));
    let hook = |name: &str| report.iter().find(|h| h.hook == name).unwrap_or_else(|| panic!("{name} not in the report: {report:?}"));
    let raw = |n: &str| ("raw tracepoint".to_string(), n.to_string());
    let holder = hook("tcp_holder");
    if (major, minor) >= (6, 3) {
        assert!(holder.attached, "tcp_holder skipped on {series}: {holder:?}");
        assert_eq!(holder.mechanisms, [raw("sock_send_length"), raw("sock_recv_length")], "{holder:?}");
    } else {
        assert!(!holder.attached, "tcp_holder attached on {series}, which has no sock_send_length: {holder:?}");
    }
    let drain = hook("tcp_drain");
    assert!(drain.attached && drain.mechanisms == [raw("tcp_destroy_sock")], "{drain:?}");
    // The history's close causes: both reset tracepoints, on every kernel.
    let reset = hook("tcp_reset");
    assert!(reset.attached && reset.mechanisms == [raw("tcp_send_reset"), raw("tcp_receive_reset")], "{reset:?}");
    let uring = hook("io_uring");
    assert!(
        uring.attached && uring.mechanisms == [("tracepoint".to_string(), "io_uring:io_uring_complete".to_string())],
        "{uring:?}"
    );
}
