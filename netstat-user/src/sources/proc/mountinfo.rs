//! /proc/self/mountinfo: where a filesystem is mounted. Shared by the
//! tracer (tracefs, the cgroup v2 root its hooks attach to) and the cgroup
//! resolver, so one rule says where cgroup v2 is.
use std::path::{Path, PathBuf};

/// mountinfo escapes space, tab, newline and backslash as octal.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)))
            .then(|| (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32)
            .filter(|v| *v <= 0xff);
        if let Some(v) = octal {
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of filesystem type `fstype`, with the root of each (field
/// 4: `/` when the whole filesystem is mounted there).
pub fn mounts<'a>(info: &'a str, fstype: &'a str) -> impl Iterator<Item = (String, &'a str)> + 'a {
    info.lines().filter_map(move |line| {
        // ... root mountpoint ... - fstype source opts
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next() != Some(fstype) {
            return None;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        (f.len() >= 5).then(|| (unescape(f[4]), f[3]))
    })
}

/// The cgroup v2 root (at /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified
/// on hybrid ones): `NETSTAT_CGROUP2`, else the first cgroup2 mount of the
/// whole hierarchy in mountinfo.
pub fn cgroup2_root(proc_root: &Path) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NETSTAT_CGROUP2") {
        return Ok(PathBuf::from(p));
    }
    let info = std::fs::read_to_string(proc_root.join("self/mountinfo")).map_err(|e| format!("cannot read mountinfo: {e}"))?;
    cgroup2_root_in(&info).ok_or_else(|| "no cgroup v2 mount (cgroup v1-only host)".to_string())
}

/// `cgroup2_root` of mountinfo text `info`.
pub fn cgroup2_root_in(info: &str) -> Option<PathBuf> {
    mounts(info, "cgroup2").find(|(_, root)| *root == "/").map(|(p, _)| PathBuf::from(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trail\\04"), "/trail\\04");
        // Found by cargo fuzz (tracefs_format): \777 overflowed a u8.
        assert_eq!(unescape("\\777x"), "\\777x");
    }

    #[test]
    fn the_cgroup2_root_is_the_whole_hierarchy() {
        let info = "25 1 0:22 / / rw - ext4 /dev/sda rw\n\
                    40 31 0:38 /sub /mnt/part rw - cgroup2 cgroup2 rw\n\
                    41 31 0:38 / /sys/fs/cgroup\\040v2 rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root_in(info), Some(PathBuf::from("/sys/fs/cgroup v2")));
        assert_eq!(cgroup2_root_in("25 1 0:22 / / rw - ext4 /dev/sda rw\n"), None);
        assert_eq!(mounts(info, "ext4").map(|(p, _)| p).collect::<Vec<_>>(), ["/"]);
    }
}
