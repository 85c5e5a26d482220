//! The eBPF side of user space: offsets (BTF, tracefs), the probe plan,
//! loading and attaching, and reading the ring buffer. Knows nothing of
//! output formats; `stream` and the table consume its `Record`s.
pub mod btf;
pub mod features;
mod counters;
pub mod drain;
pub mod offsets;
pub mod plan;
mod seed;
pub mod tracefs;

use std::{
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
};
use netstat_common::{DecodeError, Event, lost, names};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{EnvError, cli::config::Config};
pub use plan::{HookReport, HookStatus};

/// The eBPF object built by build.rs (aya-build), embedded in the binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netstat"));

/// How often the ring buffer is drained when no wake-up came (wake-ups are
/// batched in the kernel: see WAKEUP_BYTES).
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// At most this many records per batch: a reader that fell behind a full
/// ring (65,536 events at the default 8 MiB) must not hold them all at once.
pub const BATCH: usize = 4096;

/// Programs whose skipped calls the kprobe and fentry forms' tracepoint
/// checks (`inet_sock_set_state_{kprobe,fentry}_rescue`) report themselves:
/// a skip of one of these is not a loss. The kretprobes' and fexits' skips
/// (a child, an accept, a bind) are.
const RESCUED_BY_TRACEPOINT: &[&str] = &[
    "kprobe_tcp_set_state",
    "kprobe_inet_csk_listen_start",
    "kprobe_inet_csk_clone_lock",
    "fentry_tcp_set_state",
    "fentry_inet_csk_listen_start",
    // Reports no event: a skip loses none (its copy repeats the removal).
    "tcp_destroy_sock",
];

#[derive(Debug, Clone)]
pub struct TracerOptions {
    pub ring_size: u32,
    pub owner_map_size: u32,
    pub backend: crate::cli::config::Backend,
    pub btf_path: PathBuf,
    pub proc_root: PathBuf,
    /// Listeners that predate the tracer, with their owners
    /// (`sources::snapshot::listeners_with_owners`), and the inode of the
    /// network namespace they are in.
    pub listeners: Vec<crate::model::Connection>,
    pub netns: u32,
}

impl TracerOptions {
    pub fn from_config(cfg: &Config) -> Self {
        TracerOptions {
            ring_size: cfg.ring_size,
            owner_map_size: cfg.owner_map_size,
            backend: cfg.backend,
            btf_path: std::env::var_os("NETSTAT_BTF_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux")),
            proc_root: cfg.proc_root.clone(),
            listeners: Vec::new(),
            netns: 0,
        }
    }

    /// With the listeners of our namespace seeded (one /proc walk).
    pub fn with_listeners(mut self) -> Self {
        self.netns = crate::sources::netns_inode(&self.proc_root);
        self.listeners = crate::sources::snapshot::listeners_with_owners(&self.proc_root);
        self
    }
}

/// What the ring buffer yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    /// Events (or owner records) the kernel had to drop since the last report.
    /// `count` events the kernel could not deliver, as the counters said
    /// at CLOCK_MONOTONIC `noticed_ns` (every one of them was lost before).
    Lost { reason: &'static str, count: u64, noticed_ns: u64 },
    /// A record that did not decode (never expected; counted, not fatal).
    Bad(DecodeError),
}

pub struct Tracer {
    // Field order matters for Drop: the ring and maps go before the programs.
    ring: AsyncFd<RingBuf<MapData>>,
    lost: counters::LostCounters,
    lost_seen: [u64; lost::COUNT as usize],
    /// fds of our loaded programs, for their `recursion_misses` counters.
    prog_fds: Vec<i32>,
    recursion_seen: u64,
    recursion_checked: std::time::Instant,
    pub report: Vec<HookReport>,
    /// What the programs were given (from this kernel's BTF and tracefs).
    pub offsets: netstat_common::KernelOffsets,
    /// Holds programs and links: dropping it detaches everything.
    _ebpf: Ebpf,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC at start, to date kernel timestamps.
    pub clock_offset_ns: i128,
}

pub use crate::timefmt::realtime_offset_ns;

/// Root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN also does): say what is missing.
pub fn check_privileges() -> Result<(), EnvError> {
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |c: u32| eff & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(EnvError(format!(
        "tracing needs root or {} (running as uid {} without them)",
        missing.join(", "),
        unsafe { libc::geteuid() }
    )))
}

impl Tracer {
    /// Load and attach per the probe plan. Environment problems (privileges,
    /// BTF, tracefs, verifier) come back as `EnvError` with one clear line.
    pub fn start(opts: &TracerOptions) -> anyhow::Result<Tracer> {
        check_privileges()?;
        let prepared = plan::prepare(opts)?;
        let self_tgid = std::process::id();
        let wakeup_bytes: u64 = (opts.ring_size as u64 / 4).min(1 << 20);
        let mut ebpf = EbpfLoader::new()
            // No CO-RE relocations in our object: skip parsing vmlinux twice.
            .btf(None)
            .override_global(names::OFFSETS, &prepared.offsets, true)
            .override_global(names::SELF_TGID, &self_tgid, true)
            .override_global(names::WAKEUP_BYTES, &wakeup_bytes, true)
            .map_max_entries(names::EVENTS, opts.ring_size)
            .map_max_entries(names::OWNERS, opts.owner_map_size)
            .load(EBPF_OBJECT)
            .map_err(|e| EnvError(format!("loading the eBPF object failed: {}", one_line(&e.to_string()))))?;
        // Before anything is attached: no map syscall while programs run
        // (see counters.rs on what one costs a kprobe backend).
        seed::listeners(&mut ebpf, &opts.listeners, opts.netns)?;
        let report = plan::attach(&mut ebpf, &prepared)?;
        let ring = RingBuf::try_from(ebpf.take_map(names::EVENTS).context("EVENTS map missing")?)?;
        // The AsyncFd owns the ring, so the fd outlives its registration.
        #[allow(deprecated)]
        let ring = AsyncFd::with_interest(ring, Interest::READABLE)?;
        let lost = match ebpf.take_map(names::LOST).context("LOST map missing")? {
            aya::maps::Map::Array(data) => counters::LostCounters::new(data)
                .map_err(|e| EnvError(format!("mapping the drop counters failed: {e}")))?,
            _ => anyhow::bail!("LOST map is not an array"),
        };
        // The rescue programs' own misses are not losses: they skip every
        // firing but the ones another program could not see (rescue.rs).
        // Nor are the misses of the programs the tracepoint checks cover:
        // they report every call those skipped (kfunc.rs).
        let prog_fds = ebpf
            .programs()
            .filter(|(name, _)| {
                !name.ends_with("_nested") && !name.ends_with("_rescue") && !RESCUED_BY_TRACEPOINT.contains(name)
            })
            .filter_map(|(_, p)| p.fd().ok().map(|fd| std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd))))
            .collect();
        Ok(Tracer {
            ring,
            lost,
            lost_seen: [0; lost::COUNT as usize],
            prog_fds,
            recursion_seen: 0,
            recursion_checked: std::time::Instant::now(),
            report,
            offsets: prepared.offsets,
            _ebpf: ebpf,
            clock_offset_ns: realtime_offset_ns(),
        })
    }

    fn drain(&mut self, out: &mut Vec<Record>) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < BATCH {
            let Some(item) = ring.next() else { break };
            n += 1;
            out.push(match Event::try_from(&*item) {
                Ok(ev) => Record::Event(ev),
                Err(e) => Record::Bad(e),
            });
        }
        n
    }

    /// Invocations the kernel skipped because a BPF program was already
    /// running on that CPU (`recursion_misses` of each of our programs).
    fn recursion_misses(&self) -> u64 {
        self.prog_fds
            .iter()
            .filter_map(|fd| std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok())
            .filter_map(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("recursion_misses:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum()
    }

    /// The next batch of what the ring already holds, without waiting; once
    /// it is empty, every counter too, unthrottled. Returns whether more
    /// remain: call until false to have everything the kernel reported.
    pub fn finish(&mut self, out: &mut Vec<Record>) -> bool {
        if self.drain(out) == BATCH {
            return true;
        }
        self.recursion_checked -= Duration::from_secs(1);
        self.collect_lost(out);
        false
    }

    /// New drop counts since the last call, as `Lost` records.
    pub fn collect_lost(&mut self, out: &mut Vec<Record>) {
        let noticed_ns = crate::timefmt::monotonic_ns();
        // fdinfo reads are cheap but not free: a few times a second is plenty.
        let misses = if self.recursion_checked.elapsed() >= Duration::from_millis(200) {
            self.recursion_checked = std::time::Instant::now();
            // Misses first: the kernel counts a miss before the nested copy
            // rescues it, so reading RESCUED second can only under-count for
            // a moment (caught up next time), never report a phantom loss.
            let misses = self.recursion_misses();
            let rescued = self.lost.get(lost::RESCUED);
            misses.saturating_sub(rescued).max(self.recursion_seen)
        } else {
            self.recursion_seen
        };
        if misses > self.recursion_seen {
            out.push(Record::Lost { reason: "recursion", count: misses - self.recursion_seen, noticed_ns });
            self.recursion_seen = misses;
        }
        for (idx, reason) in [
            (lost::RING_FULL, "ring_full"),
            (lost::OWNERS_FULL, "owner_map_full"),
            (lost::LISTENERS_FULL, "listener_map_full"),
            (lost::PENDING_FULL, "pending_map_full"),
            (lost::READ_FAILED, "read_failed"),
            (lost::TOO_DEEP, "too_deep"),
        ] {
            let total = self.lost.get(idx);
            let seen = &mut self.lost_seen[idx as usize];
            if total > *seen {
                out.push(Record::Lost { reason, count: total - *seen, noticed_ns });
                *seen = total;
            }
        }
    }

    /// Wait for events (a wake-up or the poll interval) and return a batch,
    /// lost-event reports included. May return an empty batch.
    pub async fn next_batch(&mut self, out: &mut Vec<Record>) -> std::io::Result<()> {
        if self.drain(out) == 0 {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            self.drain(out);
        }
        self.collect_lost(out);
        Ok(())
    }
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every offset handed to the programs, by name (None where unresolved):
/// they differ between kernels, which is why none is written in the source.
pub fn offset_list(o: &netstat_common::KernelOffsets) -> Vec<(String, Option<u32>)> {
    let debug = format!("{o:?}");
    let inner = debug.split_once('{').and_then(|(_, r)| r.rsplit_once('}')).map_or("", |(l, _)| l);
    inner
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().parse().ok().filter(|&n| n != netstat_common::OFFSET_UNKNOWN)))
        .collect()
}
