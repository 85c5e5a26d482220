//! `cargo xtask install [--prefix DIR]`: build, then put the binary, its
//! man page (section 8, beside net-tools' netstat(8)) and the bash, zsh and
//! fish completions under PREFIX (default /usr/local). The man page and
//! completions come from the installed binary itself (`netstat --generate
//! KIND`, generated from its clap definition). `cargo xtask test-install`
//! (part of `cargo xtask test`) installs into a scratch prefix and checks
//! that the result works.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

pub const DEFAULT_PREFIX: &str = "/usr/local";

pub const USAGE: &str = "usage: cargo xtask install [--prefix DIR]

Builds target/release/netstat, then installs under DIR (default /usr/local):
  bin/netstat
  share/man/man8/netstat.8
  share/bash-completion/completions/netstat
  share/zsh/site-functions/_netstat
  share/fish/vendor_completions.d/netstat.fish
  lib/systemd/system/netstat-record.service (the history recorder's unit)
";

/// Where each installed file goes under a prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    pub bin: PathBuf,
    pub man: PathBuf,
    pub bash: PathBuf,
    pub zsh: PathBuf,
    pub fish: PathBuf,
    /// contrib/netstat-record.service, its ExecStart naming `bin`.
    pub unit: PathBuf,
}

impl Layout {
    pub fn new(prefix: &Path) -> Layout {
        let share = prefix.join("share");
        Layout {
            bin: prefix.join("bin/netstat"),
            man: share.join("man/man8/netstat.8"),
            bash: share.join("bash-completion/completions/netstat"),
            zsh: share.join("zsh/site-functions/_netstat"),
            fish: share.join("fish/vendor_completions.d/netstat.fish"),
            unit: prefix.join("lib/systemd/system/netstat-record.service"),
        }
    }

    fn generated(&self) -> [(&'static str, &Path); 4] {
        [("man", &self.man), ("bash", &self.bash), ("zsh", &self.zsh), ("fish", &self.fish)]
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let mut prefix = PathBuf::from(DEFAULT_PREFIX);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => prefix = it.next().context("--prefix needs a directory")?.into(),
            p if p.starts_with("--prefix=") => prefix = p["--prefix=".len()..].into(),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    crate::build()?;
    let layout = install(&crate::root().join("target/release/netstat"), &prefix)?;
    for (_, p) in layout.generated() {
        println!("installed {}", p.display());
    }
    println!("installed {}", layout.unit.display());
    println!("installed {}", layout.bin.display());
    Ok(())
}

/// Write `data` to `dest` through a temporary file beside it, so a reader
/// (or a running netstat) never sees half a file.
fn put(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = dest.parent().context("no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.xtask-{}", dest.file_name().unwrap().to_string_lossy(), std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, dest).with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
}

/// Install the built binary `bin` and what it generates under `prefix`.
pub fn install(bin: &Path, prefix: &Path) -> Result<Layout> {
    let layout = Layout::new(prefix);
    let data = fs::read(bin).with_context(|| format!("reading {} (build it first)", bin.display()))?;
    put(&layout.bin, &data, 0o755)?;
    for (kind, dest) in layout.generated() {
        let out = Command::new(&layout.bin).args(["--generate", kind]).output().with_context(|| format!("running {}", layout.bin.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("{} --generate {kind} failed: {}", layout.bin.display(), String::from_utf8_lossy(&out.stderr));
        }
        put(dest, &out.stdout, 0o644)?;
    }
    let unit_src = crate::root().join("contrib/netstat-record.service");
    let unit = fs::read_to_string(&unit_src).with_context(|| format!("reading {}", unit_src.display()))?;
    let abs = std::path::absolute(&layout.bin)?;
    put(&layout.unit, unit.replace("@NETSTAT@", &abs.to_string_lossy()).as_bytes(), 0o644)?;
    Ok(layout)
}

fn output(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("spawning {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Install the already built target/release/netstat into a scratch prefix
/// and check it: `man -l` renders the page, bash loads the completion,
/// the installed binary's `--version` names this checkout's revision.
pub fn self_test() -> Result<()> {
    crate::bootstrap::ensure_commands(&[("man", "man-db"), ("bash", "bash"), ("git", "git")])?;
    let prefix = std::env::temp_dir().join(format!("netstat-install-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&prefix);
    let result = check_prefix(&prefix);
    let _ = fs::remove_dir_all(&prefix);
    result?;
    eprintln!("xtask: install test passed (binary, man page, bash/zsh/fish completions, recorder unit, --version)");
    Ok(())
}

fn check_prefix(prefix: &Path) -> Result<()> {
    let l = install(&crate::root().join("target/release/netstat"), prefix)?;
    let man = output(Command::new("man").arg("-l").arg(&l.man).env("MANPAGER", "cat").env("MANWIDTH", "100"))?;
    if !man.contains("netstat(8)") || !man.contains("--pid") || !man.contains("NAME") {
        bail!("man -l {} did not render the page:\n{man}", l.man.display());
    }
    let script = format!("source '{}' && complete -p netstat", l.bash.display());
    let complete = output(Command::new("bash").args(["--norc", "-c", &script]))?;
    if !complete.contains("-F _netstat netstat") {
        bail!("bash did not register the completion: {complete:?}");
    }
    // zsh and fish are checked where they are installed (not required).
    for (shell, file) in [("zsh", &l.zsh), ("fish", &l.fish)] {
        if crate::bootstrap::have(shell) {
            output(Command::new(shell).arg("-n").arg(file))?;
        }
    }
    let unit = fs::read_to_string(&l.unit)?;
    let exec = unit.lines().find_map(|line| line.strip_prefix("ExecStart=")).context("the unit has no ExecStart")?;
    let abs = std::path::absolute(&l.bin)?;
    if exec.split_whitespace().next() != Some(&*abs.to_string_lossy()) || !exec.contains("--record") || unit.contains('@') {
        bail!("{} does not start the installed recorder: ExecStart={exec}", l.unit.display());
    }
    if crate::bootstrap::have("systemd-analyze") {
        output(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&l.unit))?;
    }
    let version = output(Command::new(&l.bin).arg("--version"))?;
    let rev = output(Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(crate::root()))?;
    let want = format!("(git {})", rev.trim());
    if !version.lines().next().is_some_and(|first| first.contains(&want)) {
        bail!("{} --version does not name {want}:\n{version}", l.bin.display());
    }
    Ok(())
}
