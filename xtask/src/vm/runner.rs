//! One VM run: boot qemu with the kernel and initramfs, follow the guest's
//! console (test results, the probe report, `bench:` lines), enforce the
//! timeout and turn the guest's exit status into a verdict.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{kernel::Kernel, options::Options};

/// isa-debug-exit: the guest writes its rc to this port, qemu exits with (rc << 1) | 1.
const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

pub struct RunResult {
    pub verdict: Result<(), String>,
    pub wall: Duration,
    pub passed: u32,
    pub failed: u32,
    /// `netstat --probe-report` in the guest: what each hook chose.
    pub probe_report: Vec<String>,
    /// Lines a guest command (`--exec`) printed as `bench: ...`.
    pub bench: Vec<String>,
}

/// One VM run: its kernel and `bench:` lines (for bench-backends).
pub struct Outcome {
    pub release: String,
    pub bench: Vec<String>,
}

pub fn boot(k: &Kernel, backend: &str, all_tests: bool, initramfs: &Path, o: &Options) -> RunResult {
    let tag = format!("[{} {}]", k.release, backend);
    let started = Instant::now();
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 random.trust_cpu=on NETSTAT_TEST_BACKEND={backend} RUST_TEST_THREADS={}",
        std::env::var("RUST_TEST_THREADS").unwrap_or_else(|_| "2".into())
    );
    if let Some(s) = &o.selftest {
        append.push_str(&format!(" NETSTAT_VM_SELFTEST={s}"));
    }
    if all_tests {
        append.push_str(" NETSTAT_VM_ALL_TESTS=1");
    }
    let mut c = Command::new("qemu-system-x86_64");
    // One host thread for all vCPUs: with multi-threaded TCG, the kernel's
    // cross-CPU code patching (static keys flipped when a syscall tracepoint is
    // enabled) races with stale translations and oopses on int3 (seen on 6.12).
    // A CPU with RDRAND, trusted for the kernel's random pool
    // (random.trust_cpu=on): without it the pool of a fresh emulated guest
    // takes minutes to initialize, and getrandom(2) blocks until then (the
    // tests' JSON Schema validator seeds its hash maps that way).
    c.args(["-accel", "tcg,thread=single", "-cpu", "max", "-m", "1G", "-smp", &o.smp.to_string(), "-nic", "none"])
        .args(["-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-device", DEBUG_EXIT])
        .arg("-kernel")
        .arg(&k.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let fail = |msg: String| RunResult {
        verdict: Err(msg),
        wall: started.elapsed(),
        passed: 0,
        failed: 0,
        probe_report: Vec::new(),
        bench: Vec::new(),
    };
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => return fail(format!("spawning qemu-system-x86_64: {e}")),
    };
    println!("{tag} booting {}", k.image.display());
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn({
        let tag = tag.clone();
        move || {
            let (mut passed, mut failed) = (0, 0);
            let mut report = Vec::new();
            let mut bench = Vec::new();
            for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
                let line = clean(&line);
                if let Some(b) = line.strip_prefix("bench: ") {
                    bench.push(b.to_string());
                }
                if let Some(r) = line.strip_prefix("probe-report: ")
                    && !r.starts_with("HOOK ")
                {
                    report.push(r.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                if let Some(r) = line.strip_prefix("test result: ") {
                    let num = |what: &str| -> u32 {
                        r.split(';')
                            .find_map(|p| p.trim().strip_suffix(what))
                            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                            .unwrap_or(0)
                    };
                    passed += num("passed");
                    failed += num("failed");
                }
                println!("{tag} {line}");
            }
            (passed, failed, report, bench)
        }
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if started.elapsed() > o.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("timed out after {} s", o.timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => break Err(format!("waiting for qemu: {e}")),
        }
    };
    let (passed, failed, probe_report, bench) = reader.join().unwrap_or_default();
    let verdict = status.and_then(|s| match s.code() {
        Some(1) => Ok(()),
        Some(0) => Err("no exit status from the guest: kernel panic or early power-off".into()),
        Some(c) if c & 1 == 1 => Err(format!("guest tests failed (rc {})", c >> 1)),
        _ => Err(format!("qemu failed: {s}")),
    });
    let verdict = match verdict {
        Ok(()) if passed == 0 && o.selftest.is_none() && o.exec.is_none() => Err("no test ran".into()),
        v => v,
    };
    RunResult { verdict, wall: started.elapsed(), passed, failed, probe_report, bench }
}

/// A console line without terminal control sequences or carriage returns.
pub fn clean(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_escapes() {
        assert_eq!(clean(b"\x1bc\x1b[?7l\x1b[2Jhello\r"), "hello");
    }
}
