//! `cargo xtask vm-test`: the kernel test suite on Debian's 6.1 and 6.12 kernels
//! under qemu (TCG), once per probe backend. Owns fetching and caching the
//! kernels, the initramfs and the guest's /init; never installs a kernel on the host.
//!
//! This file runs the matrix (kernels × backends) and prints the summary;
//! `options` parses the command line, `kernel` fetches the images, `static_build`
//! builds what goes into the guest, `initramfs` (with `cpio` and `init.sh`)
//! packs it, `runner` boots one VM and reads its console.
mod cpio;
mod elf;
mod host;
mod initramfs;
mod kernel;
mod options;
mod runner;
mod static_build;
pub use static_build::static_flags;

use std::{
    fs,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use kernel::Kernel;
pub use runner::Outcome;

pub fn run(args: &[String]) -> Result<()> {
    run_outcomes(args).map(|_| ())
}

/// `run`, returning what each VM run printed as `bench:` lines.
pub fn run_outcomes(args: &[String]) -> Result<Vec<Outcome>> {
    let opts = options::parse(args)?;
    let started = Instant::now();
    host::ensure_host_packages()?;
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;

    let mut kernels = Vec::new();
    for spec in &opts.kernels {
        kernels.push(kernel::fetch_kernel(spec, &cache)?);
    }
    let t_build = Instant::now();
    let bins = static_build::build_static()?;
    let build_time = t_build.elapsed();

    let initramfs = cache.join(format!("initramfs-{}.cpio", std::process::id()));
    initramfs::write_initramfs(&initramfs, &bins, &kernels, &opts)?;
    let _cleanup = RemoveOnDrop(initramfs.clone());

    // (kernel, backend, whether this run also has the backend-independent tests)
    let runs: Vec<(&Kernel, &str, bool)> = kernels
        .iter()
        .flat_map(|k| opts.backends.iter().enumerate().map(move |(i, b)| (k, b.as_str(), i == 0)))
        .collect();
    let t_vm = Instant::now();
    let results = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.min(runs.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((k, b, all)) = runs.get(i) else { break };
                    let r = runner::boot(k, b, *all, &initramfs, &opts);
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let vm_time = t_vm.elapsed();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);

    println!("\nvm-test summary:");
    let mut failed = 0;
    for (i, r) in &results {
        let (k, b, _) = runs[*i];
        let verdict = match &r.verdict {
            Ok(()) => "PASS".to_string(),
            Err(e) => {
                failed += 1;
                format!("FAIL ({e})")
            }
        };
        println!(
            "  {:<24} {:<10} {:>6.1} s  {:>3} passed {:>3} failed  {verdict}",
            k.release, b, r.wall.as_secs_f64(), r.passed, r.failed
        );
    }
    println!("\nprobe plan per kernel and backend (--probe-report in the guest):");
    for (i, r) in &results {
        let (k, b, _) = runs[*i];
        for line in &r.probe_report {
            println!("  {:<24} {:<10} {line}", k.release, b);
        }
    }
    println!(
        "vm-test wall time: {:.0} s (static build {:.0} s, VMs {:.0} s, {} job(s), -smp {})",
        started.elapsed().as_secs_f64(),
        build_time.as_secs_f64(),
        vm_time.as_secs_f64(),
        opts.jobs,
        opts.smp
    );
    if failed > 0 {
        bail!("{failed} of {} VM runs failed", results.len());
    }
    Ok(results
        .into_iter()
        .map(|(i, r)| Outcome { release: runs[i].0.release.clone(), bench: r.bench })
        .collect())
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("NETSTAT_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join(".vmcache"))
}
