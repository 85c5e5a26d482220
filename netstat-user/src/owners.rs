//! Socket owners from /proc: one pass over every /proc/PID/fd, readlink of
//! each entry, a hash map from socket inode to the lowest PID holding it.
//! Only run for -o/-b. The live table replaces this with owners captured in
//! the kernel by implementing `OwnerLookup` itself.
use std::{
    collections::{HashMap, HashSet},
    ffi::{CStr, CString},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use crate::model::{Connection, ProcOwner};

/// Something that can say who owns the sockets of a snapshot.
pub trait OwnerLookup {
    /// Fill `owner` of every connection it knows; `with_exe` asks for
    /// /proc/PID/exe too (-b).
    fn fill(&mut self, conns: &mut [Connection], with_exe: bool);
}

/// The /proc/*/fd scan.
pub struct ProcFdScan {
    pub proc_root: PathBuf,
}

impl OwnerLookup for ProcFdScan {
    fn fill(&mut self, conns: &mut [Connection], with_exe: bool) {
        let wanted: HashSet<u64> = conns.iter().map(|c| c.inode).filter(|&i| i != 0).collect();
        if wanted.is_empty() {
            return;
        }
        let by_inode = scan(&self.proc_root, &wanted);
        let mut owners: HashMap<u32, ProcOwner> = HashMap::new();
        for c in conns.iter_mut() {
            let Some(&pid) = by_inode.get(&c.inode) else { continue };
            let o = owners.entry(pid).or_insert_with(|| process(&self.proc_root, pid, with_exe));
            c.owner = Some(o.clone());
        }
    }
}

/// pid → comm (and exe) of one process.
pub fn process(proc_root: &Path, pid: u32, with_exe: bool) -> ProcOwner {
    let dir = proc_root.join(pid.to_string());
    let mut comm = std::fs::read(dir.join("comm")).unwrap_or_default();
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    let exe = if with_exe {
        std::fs::read_link(dir.join("exe")).ok().filter(|p| !p.as_os_str().is_empty())
    } else {
        None
    };
    ProcOwner { pid, comm, exe }
}

/// inode → lowest PID with an fd on it, for the inodes in `wanted`.
///
/// Processes in our own network namespace are scanned first, the others
/// only if some socket is still without an owner (a process may hold a
/// socket of another namespace): on a host with many namespaces most of
/// the /proc walk is then skipped, and the answer is the same.
pub fn scan(proc_root: &Path, wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut pids: Vec<u32> = match std::fs::read_dir(proc_root) {
        Ok(d) => d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => return HashMap::new(),
    };
    pids.sort_unstable();
    let own_ns = std::fs::read_link(proc_root.join("self/ns/net")).ok();
    let (near, far): (Vec<u32>, Vec<u32>) = match &own_ns {
        // A process whose namespace cannot be read counts as ours.
        Some(ns) => pids.iter().partition(|pid| {
            std::fs::read_link(proc_root.join(format!("{pid}/ns/net"))).map_or(true, |n| &n == ns)
        }),
        None => (pids, Vec::new()),
    };
    let mut out = scan_parallel(proc_root, &near, wanted);
    if out.len() < wanted.len() && !far.is_empty() {
        let rest: HashSet<u64> = wanted.iter().copied().filter(|i| !out.contains_key(i)).collect();
        out.extend(scan_parallel(proc_root, &far, &rest));
    }
    out
}

fn scan_parallel(proc_root: &Path, pids: &[u32], wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    // Small scans are not worth a thread.
    let threads = if pids.len() < 64 { 1 } else { threads };
    let chunk = pids.len().div_ceil(threads).max(1);
    let maps: Vec<HashMap<u64, u32>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            pids.chunks(chunk).map(|part| s.spawn(move || scan_pids(proc_root, part, wanted))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut out: HashMap<u64, u32> = HashMap::with_capacity(wanted.len());
    for m in maps {
        for (inode, pid) in m {
            out.entry(inode).and_modify(|p| *p = (*p).min(pid)).or_insert(pid);
        }
    }
    out
}

fn scan_pids(proc_root: &Path, pids: &[u32], wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    let mut link = [0u8; 64];
    let mut path = proc_root.as_os_str().as_bytes().to_vec();
    let base = path.len();
    for &pid in pids {
        path.truncate(base);
        path.extend_from_slice(format!("/{pid}/fd").as_bytes());
        let Ok(cpath) = CString::new(path.clone()) else { continue };
        // Raw libc: readlinkat relative to the fd directory avoids a full
        // path walk per descriptor, which is most of the cost at 100k sockets.
        let dfd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if dfd < 0 {
            continue;
        }
        let dir = unsafe { libc::fdopendir(dfd) };
        if dir.is_null() {
            unsafe { libc::close(dfd) };
            continue;
        }
        loop {
            let ent = unsafe { libc::readdir64(dir) };
            if ent.is_null() {
                break;
            }
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            if name.to_bytes().first().is_none_or(|c| !c.is_ascii_digit()) {
                continue;
            }
            let n = unsafe { libc::readlinkat(dfd, name.as_ptr(), link.as_mut_ptr().cast(), link.len()) };
            if n <= 0 {
                continue;
            }
            if let Some(inode) = socket_inode(&link[..n as usize])
                && wanted.contains(&inode)
            {
                out.entry(inode).or_insert(pid);
            }
        }
        unsafe { libc::closedir(dir) };
    }
    out
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let rest = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
    }

    #[test]
    fn finds_our_own_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(s.as_raw_fd(), &mut st) }, 0);
        let wanted: HashSet<u64> = [st.st_ino].into();
        let m = scan(Path::new("/proc"), &wanted);
        assert_eq!(m.get(&st.st_ino), Some(&std::process::id()));
        let o = process(Path::new("/proc"), std::process::id(), true);
        assert!(o.exe.is_some());
    }
}
