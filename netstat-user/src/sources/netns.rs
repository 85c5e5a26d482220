//! Every network namespace on the host, for --all-namespaces: found through
//! /proc/*/ns/net and the bind mounts `ip netns` keeps in /run/netns, each
//! read with sock_diag from a short-lived thread that has entered it
//! (setns needs CAP_SYS_ADMIN). A namespace is labelled with the container
//! its first process belongs to, else its inode.
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{
    cgroup,
    netlink::{self, DiagError, DumpSpec},
};
use crate::model::Connection;

/// One network namespace, and a path that names it (for setns).
#[derive(Debug, Clone)]
pub struct Namespace {
    pub inode: u32,
    pub path: PathBuf,
    /// The container of its lowest-numbered process, `RUNTIME:ID12`.
    pub container: Option<String>,
}

/// Labels of the namespaces a display shows: the Namespace column.
#[derive(Debug, Default, Clone)]
pub struct Labels(BTreeMap<u32, String>);

impl Labels {
    pub fn of(&self, netns: u32) -> String {
        match self.0.get(&netns) {
            Some(l) => l.clone(),
            None if netns == 0 => "-".into(),
            None => netns.to_string(),
        }
    }

    pub fn extend(&mut self, spaces: &[Namespace]) {
        for n in spaces {
            if let Some(c) = &n.container {
                self.0.insert(n.inode, c.clone());
            }
        }
    }
}

/// The namespace a mode is limited to: ours (its inode), or 0 for every
/// one (--all-namespaces, or ours unreadable).
pub fn scope(cfg: &crate::cli::config::Config) -> u32 {
    if cfg.all_namespaces { 0 } else { super::netns_inode(&cfg.proc_root) }
}

/// CAP_SYS_ADMIN and CAP_SYS_PTRACE in our effective set (`CapEff` of
/// /proc/self/status): setns into a network namespace needs the first, and
/// reading another user's /proc/PID/ns/net the second (without it some
/// namespaces would be missed without a word).
pub fn may_enter(proc_root: &Path) -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string(proc_root.join("self/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0 && caps & (1 << CAP_SYS_PTRACE) != 0)
}

fn inode_of(p: &Path) -> Option<u32> {
    std::fs::metadata(p).ok().map(|m| m.ino() as u32)
}

/// Every namespace a process is in, or `ip netns` pinned, lowest PID first.
pub fn list(proc_root: &Path, run_netns: &Path) -> Vec<Namespace> {
    let mut pids: Vec<u32> = match std::fs::read_dir(proc_root) {
        Ok(d) => d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => Vec::new(),
    };
    pids.sort_unstable();
    let mut by_inode: BTreeMap<u32, Namespace> = BTreeMap::new();
    for pid in pids {
        let path = proc_root.join(pid.to_string()).join("ns/net");
        let Some(inode) = inode_of(&path) else { continue };
        by_inode.entry(inode).or_insert_with(|| {
            let container = std::fs::read(proc_root.join(pid.to_string()).join("cgroup"))
                .ok()
                .and_then(|raw| cgroup::v2_path(&raw).and_then(cgroup::container_of))
                .map(|c| c.short());
            Namespace { inode, path, container }
        });
    }
    if let Ok(d) = std::fs::read_dir(run_netns) {
        for e in d.flatten() {
            let path = e.path();
            let Some(inode) = inode_of(&path) else { continue };
            by_inode.entry(inode).or_insert(Namespace { inode, path, container: None });
        }
    }
    by_inode.into_values().collect()
}

/// sock_diag of namespace `ns`, from a thread that entered it.
pub fn dump_in(ns: &Namespace, specs: &[DumpSpec]) -> Result<Vec<Connection>, DiagError> {
    let path = ns.path.clone();
    let specs = specs.to_vec();
    let inode = ns.inode;
    let joined = std::thread::spawn(move || -> Result<Vec<Connection>, DiagError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).map_err(|e| DiagError::Namespace(format!("{}: {e}", path.display())))?;
        // The PID may have exited and been reused since the listing: enter
        // only the namespace that was listed.
        if f.metadata().map(|m| m.ino() as u32).ok() != Some(inode) {
            return Err(DiagError::Namespace(format!("network namespace {inode} is gone")));
        }
        // This thread only: it ends with the dump, and the process stays
        // in its own namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(DiagError::Namespace(format!("entering network namespace {inode}: {e}")));
        }
        let mut conns = netlink::dump(&specs)?;
        for c in &mut conns {
            c.id.netns = inode;
        }
        Ok(conns)
    })
    .join();
    joined.unwrap_or_else(|_| Err(DiagError::Namespace(format!("reading network namespace {inode} failed"))))
}

/// The sockets of every namespace (ours read directly), with the labels of
/// the namespaces found. A namespace that vanished while it was read is
/// skipped; one that cannot be entered is an error (no privilege).
pub fn dump_all(proc_root: &Path, specs: &[DumpSpec]) -> Result<(Vec<Connection>, Vec<Namespace>), DiagError> {
    let own = super::netns_inode(proc_root);
    let spaces = list(proc_root, Path::new("/run/netns"));
    let mut out = netlink::dump(specs)?;
    for c in &mut out {
        c.id.netns = own;
    }
    for ns in spaces.iter().filter(|n| n.inode != own) {
        match dump_in(ns, specs) {
            Ok(c) => out.extend(c),
            // Gone between the listing and the read (its last process exited).
            Err(_) if inode_of(&ns.path) != Some(ns.inode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((out, spaces))
}
