//! Interfaces: names from /proc/net/dev (which follows the reader's network
//! namespace), index and hardware address from /sys/class/net when sysfs
//! shows the same namespace.
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Link {
    pub name: String,
    pub ifindex: Option<u32>,
    /// Hardware address as the kernel prints it; None when all zero or absent.
    pub mac: Option<String>,
}

pub fn read_sys_attr(sys_root: &Path, name: &str, attr: &str) -> Option<String> {
    // An interface name never contains '/', but /proc content is untrusted.
    if name.contains('/') || name == "." || name == ".." {
        return None;
    }
    std::fs::read_to_string(sys_root.join("class/net").join(name).join(attr)).ok().map(|s| s.trim().to_string())
}

pub fn link(sys_root: &Path, name: &str) -> Link {
    let ifindex = read_sys_attr(sys_root, name, "ifindex").and_then(|s| s.parse().ok());
    let mac = read_sys_attr(sys_root, name, "address")
        .filter(|m| !m.is_empty() && m.chars().any(|c| c != '0' && c != ':'));
    Link { name: name.to_string(), ifindex, mac }
}

/// Every interface of the namespace, by index (unknown indexes last, by name).
pub fn read(proc_root: &Path, sys_root: &Path) -> Result<Vec<Link>, super::ProcError> {
    let devs = super::dev::read(proc_root, sys_root)?;
    let mut links: Vec<Link> = devs.iter().map(|d| link(sys_root, &d.name)).collect();
    links.sort_by(|a, b| (a.ifindex.is_none(), a.ifindex, &a.name).cmp(&(b.ifindex.is_none(), b.ifindex, &b.name)));
    Ok(links)
}
