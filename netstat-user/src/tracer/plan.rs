//! The probe plan: each hook declares what it needs (tracefs, cgroup v2,
//! resolved offsets) and how it attaches; one loop attaches them and records
//! why any was skipped. Only the TCP state hook is essential.
use std::{
    collections::HashSet,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{CgroupSock, CgroupSockAddr, TracePoint, links::CgroupAttachMode},
};
use netstat_common::KernelOffsets;

use super::{
    TracerOptions, btf::Btf, offsets, one_line,
    tracefs,
};
use crate::{EnvError, config::Backend, escape::escape};

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
    tracepoints: &'static [(&'static str, &'static str, &'static str)],
    /// cgroup programs (sock or sock_addr), attached to the cgroup v2 root.
    cgroup: &'static [&'static str],
}

const HOOKS: &[Hook] = &[
    Hook {
        name: "tcp_state",
        essential: true,
        needs: &[Need::Tracefs, Need::Offsets(offsets::STATE_TP)],
        tracepoints: &[("inet_sock_set_state", "sock", "inet_sock_set_state")],
        cgroup: &[],
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
    },
    Hook {
        name: "udp_bind",
        essential: false,
        needs: &[Need::Cgroup2],
        tracepoints: &[],
        cgroup: &["udp_post_bind4", "udp_post_bind6"],
    },
    Hook {
        name: "udp_connect",
        essential: false,
        needs: &[Need::Cgroup2, Need::Tracefs, Need::Offsets(offsets::SYS_EXIT), Need::Offsets(offsets::SOCK)],
        tracepoints: &[("sys_exit_udp", "syscalls", "sys_exit_connect")],
        cgroup: &["udp_connect4", "udp_connect6"],
    },
    Hook {
        name: "udp_implicit_bind",
        essential: false,
        needs: &[Need::Cgroup2, Need::Offsets(offsets::SOCK)],
        tracepoints: &[],
        cgroup: &["udp_sock_create", "udp_sendmsg4", "udp_sendmsg6"],
    },
    Hook {
        name: "udp_close",
        essential: false,
        needs: &[Need::Cgroup2, Need::Offsets(offsets::SOCK)],
        tracepoints: &[],
        cgroup: &["udp_sock_release"],
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
}

pub fn prepare(opts: &TracerOptions) -> anyhow::Result<Prepared> {
    match opts.backend {
        Backend::Auto | Backend::Tracepoint => {}
        Backend::Fentry | Backend::Kprobe => {
            return Err(EnvError(format!(
                "backend {:?} is not available in this build: use --backend tracepoint",
                opts.backend
            ))
            .into());
        }
    }
    let data = std::fs::read(&opts.btf_path).map_err(|e| {
        EnvError(format!(
            "no kernel BTF at {} ({e}): this kernel needs CONFIG_DEBUG_INFO_BTF for tracing",
            opts.btf_path.display()
        ))
    })?;
    let btf = Btf::parse(&data)
        .map_err(|e| EnvError(format!("kernel BTF at {} is unusable: {e}", opts.btf_path.display())))?;
    let tracefs = tracefs::locate(&opts.proc_root).map_err(|e| e.to_string());
    let (state_fmt, exit_fmt) = match &tracefs {
        Ok(t) => (
            tracefs::read_format(t, "sock", "inet_sock_set_state").ok(),
            tracefs::read_format(t, "syscalls", "sys_exit_accept4").ok(),
        ),
        Err(_) => (None, None),
    };
    let resolved = offsets::resolve(&btf, state_fmt.as_ref(), exit_fmt.as_ref());
    Ok(Prepared {
        offsets: resolved.offsets,
        resolved,
        tracefs,
        cgroup2: cgroup2_root(&opts.proc_root),
    })
}

/// The cgroup v2 mount (at /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified
/// on hybrid ones), from mountinfo.
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

fn mechanism(h: &Hook) -> String {
    let mut parts: Vec<String> = h
        .tracepoints
        .iter()
        .map(|(_, c, n)| format!("tracepoint {c}:{n}"))
        .collect();
    parts.extend(h.cgroup.iter().map(|p| format!("cgroup {}", p.trim_start_matches("udp_"))));
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

fn attach_hook(ebpf: &mut Ebpf, p: &Prepared, h: &Hook, loaded: &mut HashSet<&'static str>) -> Result<(), String> {
    for (prog, cat, name) in h.tracepoints {
        let tp: &mut TracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| format!("program {prog} missing from the object"))?
            .try_into()
            .map_err(|e| format!("{prog}: {e}"))?;
        if loaded.insert(prog) {
            tp.load().map_err(|e| load_error(prog, e))?;
        }
        tp.attach(cat, name).map_err(|e| format!("attaching {cat}:{name}: {}", one_line(&e.to_string())))?;
    }
    for prog in h.cgroup {
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
        let status = match unmet(p, h.needs) {
            Some(why) => HookStatus::Skipped(why),
            None => match attach_hook(ebpf, p, h, &mut loaded) {
                Ok(()) => HookStatus::Attached,
                Err(why) => HookStatus::Skipped(why),
            },
        };
        if let (true, HookStatus::Skipped(why)) = (h.essential, &status) {
            return Err(EnvError(format!("cannot trace {}: {why}", h.name)).into());
        }
        report.push(HookReport { hook: h.name, mechanism: mechanism(h), status });
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

pub fn print_report(report: &[HookReport], w: &mut impl Write) -> std::io::Result<()> {
    writeln!(w, "{:<18} {:<8} MECHANISM / REASON", "HOOK", "STATUS")?;
    for r in report {
        match &r.status {
            HookStatus::Attached => writeln!(w, "{:<18} {:<8} {}", r.hook, "attached", r.mechanism)?,
            HookStatus::Skipped(why) => {
                writeln!(w, "{:<18} {:<8} {} ({})", r.hook, "skipped", r.mechanism, escape(why))?
            }
        }
    }
    writeln!(
        w,
        "{:<18} {:<8} fentry/fexit and kprobes are not built into this version; the tracepoint/cgroup path is used",
        "(alternatives)", "-"
    )?;
    Ok(())
}
