//! Figure 6: what each of netstat's kernel programs costs per event, with
//! traffic that sends data (`netstat-load talk`, where the per-send and
//! per-receive hooks run) and with churn (no data, every transition), from
//! BPF `run_cnt`/`run_time_ns`; and the talk rate untraced vs traced.
use std::{collections::BTreeMap, fmt::Write as _, process::Stdio};

use anyhow::{Result, bail};

use super::Section;
use crate::bench::{
    options::{Bins, Opts},
    prog_stats::{Runs, StatsEnabled, names, programs_of},
    sampling::wait_idle,
    stats::{median, spread},
    tracer::{Tracer, TracerKind},
    workload::{churn, talk},
};

const CONNECTIONS: u32 = 50;
const MESSAGES: u64 = 10_000;
const SIZE: usize = 64;
/// Paced, like the per-connection figures of PERF-NOTES (8,000-20,000/s):
/// maximum churn fills the TIME_WAIT table within seconds.
const CHURN_RATE: u64 = 10_000;
const CHURN_SECONDS: u64 = 3;

/// Counters summed over the traced runs, per program name (each run loads
/// the programs afresh, under new ids).
#[derive(Default)]
struct Cost {
    runs: BTreeMap<String, Runs>,
    /// Messages (talk) or connections (churn) they were spent on.
    units: u64,
}

impl Cost {
    fn add(&mut self, before: &BTreeMap<u32, Runs>, after: &BTreeMap<u32, Runs>, names: &BTreeMap<u32, String>, units: u64) {
        for (id, a) in after {
            let d = *a - before.get(id).copied().unwrap_or_default();
            let name = names.get(id).cloned().unwrap_or_else(|| format!("prog {id}"));
            let e = self.runs.entry(name).or_default();
            e.count += d.count;
            e.ns += d.ns;
        }
        self.units += units;
    }

    fn total_ns(&self) -> u64 {
        self.runs.values().map(|r| r.ns).sum()
    }

    /// Runs per unit, ns per run, ns per unit.
    fn cells(&self, name: &str) -> [String; 3] {
        let r = self.runs.get(name).copied().unwrap_or_default();
        if r.count == 0 || self.units == 0 {
            return ["0".into(), "–".into(), "0".into()];
        }
        let u = self.units as f64;
        [
            format!("{:.3}", r.count as f64 / u),
            format!("{:.0}", r.ns as f64 / r.count as f64),
            format!("{:.1}", r.ns as f64 / u),
        ]
    }
}

pub fn measure(opts: &Opts, bins: &Bins, section: &mut Section) -> Result<()> {
    let Section { body: s, notes } = section;
    eprintln!("bench: figure 6, per-program BPF cost ({})", bins.netstat.display());
    let _stats = StatsEnabled::on()?;
    let rounds = opts.runs.min(3);
    let (mut talk_cost, mut churn_cost) = (Cost::default(), Cost::default());
    let (mut untraced, mut traced) = (Vec::new(), Vec::new());
    // CPU µs per message of the talk processes (BPF time spent in them included).
    let (mut cpu_untraced, mut cpu_traced) = (Vec::new(), Vec::new());
    let cpu_per_msg = |t: &crate::bench::workload::Talk| t.cpu * 1e6 / t.messages.max(1) as f64;
    let (mut lost, mut incomplete) = (0u64, 0usize);
    for round in 0..rounds {
        for traced_run in [round % 2 == 1, round % 2 == 0] {
            wait_idle();
            if !traced_run {
                let t = talk(bins, CONNECTIONS, MESSAGES, SIZE, 10)?;
                eprintln!("bench:   talk untraced {:.0} messages/s", t.rate);
                incomplete += usize::from(!t.complete);
                untraced.push(t.rate);
                cpu_untraced.push(cpu_per_msg(&t));
                continue;
            }
            let tracer = match Tracer::start(bins, TracerKind::Netstat { ring: None }, Stdio::null()) {
                Ok(t) => t,
                Err(e) => bail!("netstat --stream --json did not start: {e}"),
            };
            let pid = tracer.child.id();
            let prog_names = names()?;
            let c0 = programs_of(pid)?;
            let t = talk(bins, CONNECTIONS, MESSAGES, SIZE, 10)?;
            let c1 = programs_of(pid)?;
            let c = churn(bins, CHURN_SECONDS, CHURN_RATE, 2)?;
            let c2 = programs_of(pid)?;
            lost += tracer.finish().0;
            eprintln!("bench:   talk traced   {:.0} messages/s; churn {} connections", t.rate, c.connections);
            incomplete += usize::from(!t.complete);
            traced.push(t.rate);
            cpu_traced.push(cpu_per_msg(&t));
            talk_cost.add(&c0, &c1, &prog_names, t.messages);
            churn_cost.add(&c1, &c2, &prog_names, c.connections);
        }
    }
    if talk_cost.runs.is_empty() {
        bail!("netstat held no BPF program fds");
    }

    let version = std::process::Command::new(&bins.netstat)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "`{}` (`{version}`) running as `netstat --stream --json >/dev/null` with `kernel.bpf_stats_enabled=1` \
         (restored afterwards). Each of its programs' `run_cnt` and `run_time_ns` (fdinfo of its program fds) is read \
         before and after each workload, summed over {rounds} traced runs:\n\n\
         - **talk**: `netstat-load talk --connections {CONNECTIONS} --messages {MESSAGES} --size {SIZE}`: {CONNECTIONS} \
         held loopback connections between a client and a server process, each message sent, echoed and read back \
         (2 sends and 2 receives), {} messages in all.\n\
         - **churn**: `netstat-load churn --processes 2 --rate {CHURN_RATE} --seconds {CHURN_SECONDS}` (connect and \
         close, no data), {} connections in all.\n\n\
         Counters are machine-wide for each program (another process's sends count too), and include the talk \
         connections' own setup and teardown ({CONNECTIONS} connections per run, next to the messages).\n",
        bins.netstat.display(),
        talk_cost.units,
        churn_cost.units,
    );
    let _ = writeln!(
        s,
        "| program | talk: runs/message | ns/run | ns/message | churn: runs/connection | ns/run | ns/connection |\n\
         |---|---|---|---|---|---|---|"
    );
    let mut progs: Vec<&String> = talk_cost.runs.keys().chain(churn_cost.runs.keys()).collect();
    progs.sort();
    progs.dedup();
    let ns_of = |c: &Cost, p: &str| c.runs.get(p).map_or(0, |r| r.ns);
    progs.sort_by_key(|p| std::cmp::Reverse((ns_of(&talk_cost, p), ns_of(&churn_cost, p))));
    let mut idle = Vec::new();
    for p in progs {
        let ran = |c: &Cost| c.runs.get(p).is_some_and(|r| r.count > 0);
        if !ran(&talk_cost) && !ran(&churn_cost) {
            idle.push(format!("`{p}`"));
            continue;
        }
        let [a, b, c] = talk_cost.cells(p);
        let [d, e, f] = churn_cost.cells(p);
        let _ = writeln!(s, "| `{p}` | {a} | {b} | {c} | {d} | {e} | {f} |");
    }
    let per = |c: &Cost| if c.units == 0 { f64::NAN } else { c.total_ns() as f64 / c.units as f64 };
    let (per_msg, per_conn) = (per(&talk_cost), per(&churn_cost));
    let _ = writeln!(s, "| **all programs** | | | **{per_msg:.1}** | | | **{per_conn:.0}** |");
    if !idle.is_empty() {
        let _ = writeln!(s, "\nLoaded but never ran in either workload: {}.", idle.join(", "));
    }
    let (mu, mt) = (median(&untraced), median(&traced));
    let ((ul, uh), (tl, th)) = (spread(&untraced), spread(&traced));
    let (cu, ct) = (median(&cpu_untraced), median(&cpu_traced));
    let ((cul, cuh), (ctl, cth)) = (spread(&cpu_untraced), spread(&cpu_traced));
    let _ = writeln!(
        s,
        "\nTalk rate (alternated, {rounds} runs each): untraced {mu:.0} messages/s ({ul:.0}–{uh:.0}), traced \
         {mt:.0} ({tl:.0}–{th:.0}): **{:.2}x** of untraced. CPU of the talk processes (client and server, user \
         plus system, the BPF time they run included): untraced {cu:.2} µs/message ({cul:.2}–{cuh:.2}), traced \
         {ct:.2} ({ctl:.2}–{cth:.2}): **{:.2}x**. Events lost by the tracer: {lost}.\n\n\
         The BPF time above is {:.1}% of the talk's untraced CPU per message: what tracing should add. Both the \
         rate and the CPU time move with other work on the machine by more than that, so the BPF counters, not \
         the ratios, are the measure of what the programs cost.",
        mt / mu,
        ct / cu,
        per_msg / (cu * 1e3) * 100.0
    );
    if incomplete > 0 {
        let _ = writeln!(s, "\n{incomplete} talk runs hit their 10 s deadline before sending every message.");
    }
    notes.push(format!(
        "BPF {per_msg:.1} ns/message (talk), {per_conn:.0} ns/connection (churn); talk traced {:.2}x of untraced \
         ({mt:.0} vs {mu:.0} messages/s), CPU {ct:.2} vs {cu:.2} µs/message",
        mt / mu
    ));
    Ok(())
}
