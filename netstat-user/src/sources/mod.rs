//! Where connections and reports come from, read on demand: the kernel's
//! socket list (sock_diag, falling back to /proc/net), socket owners from
//! /proc/*/fd, host and service names, and the -e/-r/-s counters. Each
//! reader takes a root path so tests can point it at a fixture tree.
pub mod cgroup;
pub mod delta;
pub mod history;
pub mod info;
pub mod netlink;
pub mod netns;
pub mod owners;
pub mod proc;
pub mod resolve;
pub mod snapshot;

/// Inode of our network namespace (/proc/self/ns/net): how the kernel's
/// events and maps name it. 0 when unreadable.
pub fn netns_inode(proc_root: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(proc_root.join("self/ns/net")).map(|m| m.ino() as u32).unwrap_or(0)
}
