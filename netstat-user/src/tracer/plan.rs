//! The probe plan: each hook declares what it needs (tracefs, cgroup v2,
//! resolved offsets) and how it attaches; one loop attaches them and records
//! why any was skipped. Only the TCP state hook is essential.
use std::{
    collections::HashSet,
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Btf as AyaBtf, Ebpf, Endianness,
    programs::{
        BtfTracePoint, CgroupSock, CgroupSockAddr, FEntry, FExit, KProbe, RawTracePoint, TracePoint,
        links::CgroupAttachMode,
    },
};
use netstat_common::KernelOffsets;

use super::{
    TracerOptions, btf::Btf, offsets, one_line,
    tracefs,
};
use crate::{EnvError, cli::config::Backend, escape::escape};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStatus {
    Attached,
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct HookReport {
    pub hook: &'static str,
    pub mechanism: String,
    pub status: HookStatus,
}

#[derive(Clone, Copy)]
enum Need {
    Tracefs,
    Cgroup2,
    Offsets(&'static str),
}

struct Hook {
    name: &'static str,
    essential: bool,
    needs: &'static [Need],
    /// (program, category, tracepoint)
    tracepoints: &'static [Tracepoint],
    /// cgroup programs (sock or sock_addr), attached to the cgroup v2 root.
    cgroup: &'static [&'static str],
    /// The same hook's tracepoints for kernels that refuse `tracepoints`,
    /// tried right after them: plain raw tracepoints where tp_btf with
    /// bpf_get_socket_cookie does not load (that helper came to tracing
    /// programs in 5.12). Same events, the cookie read from memory.
    fallback: &'static [Tracepoint],
    /// The kernel-function forms (fentry.rs, kprobe.rs), each a complete
    /// replacement for `tracepoints` + `cgroup`, with what they need.
    fentry: &'static [Probe],
    kprobe: &'static [Probe],
    probe_needs: &'static [Need],
    /// Under `--backend auto`, try fentry, then kprobe, before the
    /// tracepoint/cgroup form (otherwise after it).
    prefer_probes: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ProbeKind {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    /// A tp_btf program beside a kprobe or fentry form (the function is the
    /// tracepoint): reports the calls they missed, and asks for cookies.
    BtfRescue,
}

/// (program, kind, kernel function)
type Probe = (&'static str, ProbeKind, &'static str);
/// (program, category, tracepoint); category `RAW` or `BTF`, or the tracefs
/// category of a classic tracepoint.
type Tracepoint = (&'static str, &'static str, &'static str);

/// Which form of a hook an attempt uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Classic,
    /// `Hook::fallback`.
    Fallback,
    Fentry,
    Kprobe,
}

/// Category of a raw tracepoint in `Hook::tracepoints`.
const RAW: &str = "raw";
/// Category of a BTF-typed raw tracepoint (tp_btf), which needs aya's parse
/// of vmlinux BTF to load.
const BTF: &str = "btf";

use ProbeKind::{BtfRescue as RESCUE, Fentry as FEN, Fexit as FEX, Kprobe as KP, Kretprobe as KRP};

const HOOKS: &[Hook] = &[
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
        prefer_probes: false,
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
        // The accepted socket comes straight back: no fd walk, no syscall filter.
        fentry: &[("fexit_inet_csk_accept", FEX, "inet_csk_accept")],
        kprobe: &[("kretprobe_inet_csk_accept", KRP, "inet_csk_accept")],
        probe_needs: &[Need::Offsets(offsets::SOCK)],
        prefer_probes: true,
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
        prefer_probes: false,
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
        prefer_probes: false,
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
        prefer_probes: false,
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
        prefer_probes: false,
    },
];

/// bpf_link_create rejects any flag for cgroup links, and a link already
/// behaves as BPF_F_ALLOW_MULTI: it coexists with other programs (systemd's).
const CG_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// Everything resolved before loading: offsets and where to attach.
pub struct Prepared {
    pub offsets: KernelOffsets,
    resolved: offsets::Resolved,
    tracefs: Result<PathBuf, String>,
    cgroup2: Result<PathBuf, String>,
    /// We mounted cgroup2 ourselves (a mount namespace without it, such as
    /// `ip netns exec`): detach it once the programs are attached.
    cgroup2_temp: bool,
    backend: Backend,
    btf_path: PathBuf,
    /// aya's parse of vmlinux BTF, which fentry/fexit loads need; parsed on
    /// first use only (about 2 s on a slow machine).
    aya_btf: std::cell::OnceCell<Result<AyaBtf, String>>,
}

pub fn prepare(opts: &TracerOptions) -> anyhow::Result<Prepared> {
    let data = std::fs::read(&opts.btf_path).map_err(|e| {
        EnvError(format!(
            "no kernel BTF at {} ({e}): this kernel needs CONFIG_DEBUG_INFO_BTF for tracing",
            opts.btf_path.display()
        ))
    })?;
    let btf = Btf::parse(&data)
        .map_err(|e| EnvError(format!("kernel BTF at {} is unusable: {e}", opts.btf_path.display())))?;
    let tracefs = tracefs::locate(&opts.proc_root).map_err(|e| e.to_string());
    let exit_fmt = tracefs.as_ref().ok().and_then(|t| tracefs::read_format(t, "syscalls", "sys_exit_accept4").ok());
    let resolved = offsets::resolve(&btf, exit_fmt.as_ref());
    let cgroup2 = cgroup2_root_or_mount(&opts.proc_root);
    Ok(Prepared {
        offsets: resolved.offsets,
        resolved,
        tracefs,
        cgroup2_temp: matches!(&cgroup2, Ok(p) if p.to_string_lossy().starts_with(TEMP_CGROUP2_PREFIX)),
        cgroup2,
        backend: opts.backend,
        btf_path: opts.btf_path.clone(),
        aya_btf: std::cell::OnceCell::new(),
    })
}

/// The cgroup v2 mount (at /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified
/// on hybrid ones), from mountinfo.
const TEMP_CGROUP2_PREFIX: &str = "/run/netstat-cgroup2-";

/// The cgroup v2 root: the mounted one, else (as root) a private mount of
/// our own, so that a mount namespace without cgroup2 still gets UDP hooks.
fn cgroup2_root_or_mount(proc_root: &Path) -> Result<PathBuf, String> {
    let found = cgroup2_root(proc_root);
    if found.is_ok() || unsafe { libc::geteuid() } != 0 {
        return found;
    }
    let dir = PathBuf::from(format!("{TEMP_CGROUP2_PREFIX}{}", std::process::id()));
    let why = found.unwrap_err();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{why}; creating {}: {e}", dir.display()))?;
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let target = c(&dir.to_string_lossy());
    let rc = unsafe { libc::mount(c("none").as_ptr(), target.as_ptr(), c("cgroup2").as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_dir(&dir);
        return Err(format!("{why}; mounting cgroup2 failed: {e}"));
    }
    Ok(dir)
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let (true, Ok(dir)) = (self.cgroup2_temp, &self.cgroup2) {
            let c = std::ffi::CString::new(dir.to_string_lossy().as_bytes()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub fn cgroup2_root(proc_root: &Path) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NETSTAT_CGROUP2") {
        return Ok(PathBuf::from(p));
    }
    let info = std::fs::read_to_string(proc_root.join("self/mountinfo"))
        .map_err(|e| format!("cannot read mountinfo: {e}"))?;
    let mut found = None;
    for line in info.lines() {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else { continue };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        if f.len() >= 5 && f[3] == "/" {
            found = Some(PathBuf::from(tracefs::unescape_mount(f[4])));
            break;
        }
    }
    found.ok_or_else(|| "no cgroup v2 mount (cgroup v1-only host)".to_string())
}

fn unmet(p: &Prepared, needs: &[Need]) -> Option<String> {
    for n in needs {
        match n {
            Need::Tracefs => {
                if let Err(e) = &p.tracefs {
                    return Some(e.clone());
                }
            }
            Need::Cgroup2 => {
                if let Err(e) = &p.cgroup2 {
                    return Some(e.clone());
                }
            }
            Need::Offsets(g) => {
                if let Some(r) = p.resolved.missing(g) {
                    return Some(format!("{g}: {r}"));
                }
            }
        }
    }
    None
}

/// The forms to try for a hook, in order, under the chosen backend. A forced
/// backend uses its own form where the hook has one, and nothing else.
fn forms(h: &Hook, backend: Backend) -> Vec<Form> {
    let has = |f: Form| match f {
        Form::Classic => true,
        Form::Fallback => !h.fallback.is_empty(),
        Form::Fentry => !h.fentry.is_empty(),
        Form::Kprobe => !h.kprobe.is_empty(),
    };
    let order: &[Form] = match backend {
        Backend::Tracepoint => &[Form::Classic, Form::Fallback],
        Backend::Fentry if has(Form::Fentry) => &[Form::Fentry],
        Backend::Kprobe if has(Form::Kprobe) => &[Form::Kprobe],
        Backend::Fentry | Backend::Kprobe => &[Form::Classic, Form::Fallback],
        Backend::Auto if h.prefer_probes => &[Form::Fentry, Form::Kprobe, Form::Classic, Form::Fallback],
        Backend::Auto => &[Form::Classic, Form::Fallback, Form::Fentry, Form::Kprobe],
    };
    order.iter().copied().filter(|f| has(*f)).collect()
}

fn probes(h: &Hook, form: Form) -> &'static [Probe] {
    match form {
        Form::Fentry => h.fentry,
        Form::Kprobe => h.kprobe,
        Form::Classic | Form::Fallback => &[],
    }
}

fn probe_mechanism(probes: &[Probe]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (_, kind, func) in probes {
        let k = match kind {
            ProbeKind::Fentry => "fentry",
            ProbeKind::Fexit => "fexit",
            ProbeKind::Kprobe => "kprobe",
            ProbeKind::Kretprobe => "kretprobe",
            ProbeKind::BtfRescue => "missed-call check on tp_btf",
        };
        let p = format!("{k} {func}");
        if !parts.contains(&p) {
            parts.push(p);
        }
    }
    parts.join(", ")
}

fn form_mechanism(h: &Hook, form: Form) -> String {
    match form {
        Form::Classic => mechanism(h.tracepoints, h.cgroup),
        Form::Fallback => mechanism(h.fallback, &[]),
        f => probe_mechanism(probes(h, f)),
    }
}

fn aya_btf(p: &Prepared) -> Result<&AyaBtf, String> {
    p.aya_btf
        .get_or_init(|| {
            AyaBtf::parse_file(&p.btf_path, Endianness::default())
                .map_err(|e| format!("parsing {} for fentry: {}", p.btf_path.display(), one_line(&e.to_string())))
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// A load refused before the verifier ran (no log) says so, rather than
/// blaming the verifier: that is how kernels without trampolines answer.
fn probe_load_error(prog: &str, e: aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } if verifier_log.to_string().trim().is_empty() => {
            format!("the kernel refused to load {prog} ({io_error})")
        }
        other => load_error(prog, other),
    }
}

/// Load (once) and attach the programs of a fentry or kprobe form.
fn attach_probes(ebpf: &mut Ebpf, p: &Prepared, probes: &[Probe], loaded: &mut HashSet<&'static str>) -> Result<(), String> {
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe");
    if probes.iter().any(|(_, k, _)| matches!(k, ProbeKind::Kprobe | ProbeKind::Kretprobe)) && !kprobe_pmu.exists() {
        return Err(format!("this kernel has no kprobes ({} is missing)", kprobe_pmu.display()));
    }
    for (prog, kind, func) in probes {
        let program = ebpf.program_mut(prog).ok_or_else(|| format!("program {prog} missing from the object"))?;
        let attach_err = |e: aya::programs::ProgramError| format!("attaching {prog} to {func}: {}", one_line(&format!("{:#}", anyhow::Error::from(e))));
        match kind {
            ProbeKind::Fentry => {
                let f: &mut FEntry = program.try_into().map_err(|e| format!("{prog}: {e}"))?;
                if loaded.insert(prog) {
                    f.load(func, aya_btf(p)?).map_err(|e| probe_load_error(prog, e))?;
                }
                f.attach().map_err(attach_err)?;
            }
            ProbeKind::Fexit => {
                let f: &mut FExit = program.try_into().map_err(|e| format!("{prog}: {e}"))?;
                if loaded.insert(prog) {
                    f.load(func, aya_btf(p)?).map_err(|e| probe_load_error(prog, e))?;
                }
                f.attach().map_err(attach_err)?;
            }
            ProbeKind::Kprobe | ProbeKind::Kretprobe => {
                let k: &mut KProbe = program.try_into().map_err(|e| format!("{prog}: {e}"))?;
                if loaded.insert(prog) {
                    k.load().map_err(|e| probe_load_error(prog, e))?;
                }
                k.attach(func, 0).map_err(attach_err)?;
            }
            ProbeKind::BtfRescue => {
                let tp: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{prog}: {e}"))?;
                if loaded.insert(prog) {
                    tp.load(func, aya_btf(p)?).map_err(|e| load_error(prog, e))?;
                }
                tp.attach().map_err(attach_err)?;
            }
        }
    }
    Ok(())
}

/// Undo a form that failed half-way, so a fallback never doubles events.
fn unload(ebpf: &mut Ebpf, h: &Hook, form: Form, loaded: &mut HashSet<&'static str>) {
    let names: Vec<&'static str> = match form {
        Form::Classic => h.tracepoints.iter().map(|(p, _, _)| *p).chain(h.cgroup.iter().copied()).collect(),
        Form::Fallback => h.fallback.iter().map(|(p, _, _)| *p).collect(),
        f => probes(h, f).iter().map(|(p, _, _)| *p).collect(),
    };
    for name in names {
        if !loaded.remove(name) {
            continue;
        }
        let Some(program) = ebpf.program_mut(name) else { continue };
        let _ = match program {
            aya::programs::Program::TracePoint(x) => x.unload(),
            aya::programs::Program::RawTracePoint(x) => x.unload(),
            aya::programs::Program::BtfTracePoint(x) => x.unload(),
            aya::programs::Program::CgroupSock(x) => x.unload(),
            aya::programs::Program::CgroupSockAddr(x) => x.unload(),
            aya::programs::Program::FEntry(x) => x.unload(),
            aya::programs::Program::FExit(x) => x.unload(),
            aya::programs::Program::KProbe(x) => x.unload(),
            _ => Ok(()),
        };
    }
}

/// Debian and Ubuntu kernels refuse perf events (tracepoint and kprobe
/// attachments) to anyone without CAP_SYS_ADMIN at perf_event_paranoid 3,
/// whatever CAP_PERFMON says: name the setting when that is what failed.
fn perf_paranoid_hint(why: &str) -> String {
    if !why.contains("perf_event_open") || unsafe { libc::geteuid() } == 0 {
        return String::new();
    }
    match std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").map(|s| s.trim().parse::<i32>()) {
        Ok(Ok(level)) if level > 2 => format!(
            " (kernel.perf_event_paranoid is {level}: perf events need CAP_SYS_ADMIN; fentry does not)"
        ),
        _ => String::new(),
    }
}

fn form_name(form: Form) -> &'static str {
    match form {
        Form::Classic => "tracepoint/cgroup",
        Form::Fallback => "raw tracepoint",
        Form::Fentry => "fentry/fexit",
        Form::Kprobe => "kprobe",
    }
}

fn mechanism(tracepoints: &[Tracepoint], cgroup: &[&str]) -> String {
    let mut parts: Vec<String> = tracepoints
        .iter()
        .map(|(_, c, n)| match *c {
            RAW => format!("raw tracepoint {n}"),
            BTF => format!("tp_btf {n}"),
            _ => format!("tracepoint {c}:{n}"),
        })
        .collect();
    parts.dedup();
    parts.extend(cgroup.iter().map(|p| format!("cgroup {}", p.trim_start_matches("udp_"))));
    parts.join(", ")
}

fn load_error(prog: &str, e: aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError;
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            if std::env::var_os("NETSTAT_VERIFIER_LOG").is_some() { eprintln!("{log}"); }
            let last = log.lines().rev().find(|l| { let l = l.trim(); !l.is_empty() && !l.starts_with("processed") && !l.starts_with("stack depth") && !l.starts_with("verification time") }).unwrap_or("");
            format!("the kernel verifier rejected {prog} ({io_error}): {}", one_line(last))
        }
        other => format!("{prog}: {}", one_line(&format!("{other:#}"))),
    }
}

fn attach_hook(
    ebpf: &mut Ebpf,
    p: &Prepared,
    tracepoints: &'static [Tracepoint],
    cgroup: &'static [&'static str],
    loaded: &mut HashSet<&'static str>,
) -> Result<(), String> {
    for (prog, cat, name) in tracepoints {
        let program = ebpf.program_mut(prog).ok_or_else(|| format!("program {prog} missing from the object"))?;
        if *cat == BTF {
            let tp: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{prog}: {e}"))?;
            if loaded.insert(prog) {
                tp.load(name, aya_btf(p)?).map_err(|e| load_error(prog, e))?;
            }
            tp.attach().map_err(|e| format!("attaching tp_btf {name}: {}", one_line(&e.to_string())))?;
            continue;
        }
        if *cat == RAW {
            let tp: &mut RawTracePoint = program.try_into().map_err(|e| format!("{prog}: {e}"))?;
            if loaded.insert(prog) {
                tp.load().map_err(|e| load_error(prog, e))?;
            }
            tp.attach(name).map_err(|e| format!("attaching raw tracepoint {name}: {}", one_line(&e.to_string())))?;
            continue;
        }
        let tp: &mut TracePoint = program.try_into().map_err(|e| format!("{prog}: {e}"))?;
        if loaded.insert(prog) {
            tp.load().map_err(|e| load_error(prog, e))?;
        }
        tp.attach(cat, name).map_err(|e| format!("attaching {cat}:{name}: {}", one_line(&e.to_string())))?;
    }
    for prog in cgroup {
        let cg_path = p.cgroup2.as_ref().map_err(|e| e.clone())?;
        let cg = File::open(cg_path).map_err(|e| format!("opening {}: {e}", cg_path.display()))?;
        let program = ebpf.program_mut(prog).ok_or_else(|| format!("program {prog} missing from the object"))?;
        let res = match program {
            aya::programs::Program::CgroupSock(s) => {
                let s: &mut CgroupSock = s;
                if loaded.insert(prog) {
                    s.load().map_err(|e| load_error(prog, e))?;
                }
                s.attach(&cg, CG_MODE).map(|_| ())
            }
            aya::programs::Program::CgroupSockAddr(s) => {
                let s: &mut CgroupSockAddr = s;
                if loaded.insert(prog) {
                    s.load().map_err(|e| load_error(prog, e))?;
                }
                s.attach(&cg, CG_MODE).map(|_| ())
            }
            _ => return Err(format!("{prog} is not a cgroup program")),
        };
        res.map_err(|e| format!("attaching {prog} to {}: {}", cg_path.display(), one_line(&format!("{:#}", anyhow::Error::from(e)))))?;
    }
    Ok(())
}

/// Attach every hook whose needs are met. Fails only when an essential hook
/// cannot be attached.
pub fn attach(ebpf: &mut Ebpf, p: &Prepared) -> anyhow::Result<Vec<HookReport>> {
    let mut report = Vec::new();
    let mut loaded = HashSet::new();
    for h in HOOKS {
        // Each form is tried in turn; what stopped the ones before the form
        // used is kept for the report.
        let mut passed_over: Vec<String> = Vec::new();
        let mut chosen = None;
        for form in forms(h, p.backend) {
            let needs = if matches!(form, Form::Classic | Form::Fallback) { h.needs } else { h.probe_needs };
            let res = match unmet(p, needs) {
                Some(why) => Err(why),
                None => match form {
                    Form::Classic => attach_hook(ebpf, p, h.tracepoints, h.cgroup, &mut loaded),
                    Form::Fallback => attach_hook(ebpf, p, h.fallback, &[], &mut loaded),
                    f => attach_probes(ebpf, p, probes(h, f), &mut loaded),
                },
            };
            match res {
                Ok(()) => {
                    chosen = Some(form);
                    break;
                }
                Err(why) => {
                    unload(ebpf, h, form, &mut loaded);
                    passed_over.push(format!("{}: {why}{}", form_name(form), perf_paranoid_hint(&why)));
                }
            }
        }
        let (mechanism, status) = match chosen {
            Some(form) => {
                let mut m = form_mechanism(h, form);
                if !passed_over.is_empty() {
                    m = format!("{m} (not {})", passed_over.join("; not "));
                }
                (m, HookStatus::Attached)
            }
            None => {
                let tried: Vec<Form> = forms(h, p.backend);
                let m = tried.iter().map(|f| form_mechanism(h, *f)).collect::<Vec<_>>().join(" | ");
                (m, HookStatus::Skipped(passed_over.join("; ")))
            }
        };
        if let (true, HookStatus::Skipped(why)) = (h.essential, &status) {
            return Err(EnvError(format!("cannot trace {}: {why}", h.name)).into());
        }
        report.push(HookReport { hook: h.name, mechanism, status });
    }
    Ok(report)
}

/// One warning line per skipped hook, for stderr.
pub fn warnings(report: &[HookReport]) -> Vec<String> {
    report
        .iter()
        .filter_map(|r| match &r.status {
            HookStatus::Skipped(why) => Some(format!("warning: {} not traced: {}", r.hook, escape(why))),
            HookStatus::Attached => None,
        })
        .collect()
}

