//! What the VM runs need on the host: qemu and a static busybox, installed
//! with apt-get when missing; and finding host tools on PATH.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use super::elf::is_static_elf;

pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into(), "/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

pub fn on_path(bin: &str) -> bool {
    which(bin).is_some()
}

pub fn ensure_host_packages() -> Result<()> {
    let mut missing = Vec::new();
    if !on_path("qemu-system-x86_64") {
        missing.push("qemu-system-x86");
    }
    if !is_static_elf(Path::new("/bin/busybox")) {
        missing.push("busybox-static");
    }
    // The guests' copies of the tools the tests run (initramfs.rs HOST_TOOLS),
    // by the packages the test command installs them from.
    for (tool, pkg) in crate::bootstrap::TEST_COMMANDS.iter().filter(|(t, _)| super::initramfs::HOST_TOOLS.contains(t)) {
        if !on_path(tool) && !missing.contains(pkg) {
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)?;
    if !is_static_elf(Path::new("/bin/busybox")) {
        bail!("/bin/busybox is still not a static executable after installing busybox-static");
    }
    Ok(())
}

pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    eprintln!("xtask: installing {} (apt-get)", pkgs.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return Ok(());
    }
    apt_update()?;
    if !install() {
        bail!("apt-get install {} failed", pkgs.join(" "));
    }
    Ok(())
}

pub fn apt_update() -> Result<()> {
    let mut c = Command::new("apt-get");
    c.arg("update");
    crate::check(c)
}
