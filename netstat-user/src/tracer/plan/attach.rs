//! Loading and attaching: one loop over the hooks, each form tried in turn,
//! a failed form undone before the next, and why each was passed over.
use std::{collections::HashSet, fs::File, path::Path};

use aya::{
    Btf as AyaBtf, Ebpf, Endianness,
    programs::{
        BtfTracePoint, CgroupSock, CgroupSockAddr, FEntry, FExit, KProbe, RawTracePoint, TracePoint,
        links::CgroupAttachMode,
    },
};

use super::super::one_line;
use super::{prepare::unmet, *};
use crate::{EnvError, cli::config::Backend};

/// bpf_link_create rejects any flag for cgroup links, and a link already
/// behaves as BPF_F_ALLOW_MULTI: it coexists with other programs (systemd's).
pub(super) const CG_MODE: CgroupAttachMode = CgroupAttachMode::Single;


/// The forms to try for a hook, in order, under the chosen backend. A forced
/// backend uses its own form where the hook has one, and nothing else.
pub(super) fn forms(h: &Hook, backend: Backend) -> Vec<Form> {
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
        Backend::Auto => &[Form::Classic, Form::Fallback, Form::Fentry, Form::Kprobe],
    };
    order.iter().copied().filter(|f| has(*f)).collect()
}

pub(super) fn probes(h: &Hook, form: Form) -> &'static [Probe] {
    match form {
        Form::Fentry => h.fentry,
        Form::Kprobe => h.kprobe,
        Form::Classic | Form::Fallback => &[],
    }
}

pub(super) fn probe_mechanism(probes: &[Probe]) -> String {
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

pub(super) fn form_mechanism(h: &Hook, form: Form) -> String {
    match form {
        Form::Classic => mechanism(h.tracepoints, h.cgroup),
        Form::Fallback => mechanism(h.fallback, &[]),
        f => probe_mechanism(probes(h, f)),
    }
}

pub(super) fn aya_btf(p: &Prepared) -> Result<&AyaBtf, String> {
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
pub(super) fn probe_load_error(prog: &str, e: aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } if verifier_log.to_string().trim().is_empty() => {
            format!("the kernel refused to load {prog} ({io_error})")
        }
        other => load_error(prog, other),
    }
}

/// Load (once) and attach the programs of a fentry or kprobe form.
pub(super) fn attach_probes(ebpf: &mut Ebpf, p: &Prepared, probes: &[Probe], loaded: &mut HashSet<&'static str>) -> Result<(), String> {
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
pub(super) fn unload(ebpf: &mut Ebpf, h: &Hook, form: Form, loaded: &mut HashSet<&'static str>) {
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
pub(super) fn perf_paranoid_hint(why: &str) -> String {
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

pub(super) fn form_name(form: Form) -> &'static str {
    match form {
        Form::Classic => "tracepoint/cgroup",
        Form::Fallback => "raw tracepoint",
        Form::Fentry => "fentry/fexit",
        Form::Kprobe => "kprobe",
    }
}

pub(super) fn mechanism(tracepoints: &[Tracepoint], cgroup: &[&str]) -> String {
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

pub(super) fn load_error(prog: &str, e: aya::programs::ProgramError) -> String {
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

pub(super) fn attach_hook(
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

