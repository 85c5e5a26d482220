//! Socket owners from /proc: one pass over every /proc/PID/fd, readlink of
//! each entry, a hash map from socket inode to the lowest PID holding it.
//! Only run for -o/-b (and JSON); the live table asks it once, for its seed.
use std::{
    collections::{HashMap, HashSet},
    ffi::{CStr, CString},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::cgroup::Cgroups;
use crate::model::{Comm, Connection, Owner, OwnerSource, Process};

/// The /proc/*/fd scan.
pub struct ProcFdScan {
    pub proc_root: PathBuf,
}

impl ProcFdScan {
    /// Fill `owner` of every connection some process holds; `with_exe`
    /// reads /proc/PID/exe too (-b, JSON).
    pub fn fill(&self, conns: &mut [Connection], with_exe: bool) {
        self.fill_with(conns, with_exe, None)
    }

    /// `fill`, with each holder's parent, namespace PID and cgroup (unit,
    /// container) resolved through `cgroups`.
    pub fn fill_with(&self, conns: &mut [Connection], with_exe: bool, mut cgroups: Option<&mut Cgroups>) {
        let wanted: HashSet<u64> = conns.iter().map(|c| c.inode).filter(|&i| i != 0).collect();
        if wanted.is_empty() {
            return;
        }
        let by_inode = scan(&self.proc_root, &wanted);
        let mut owners: HashMap<u32, Owner> = HashMap::new();
        for c in conns.iter_mut() {
            let Some(&pid) = by_inode.get(&c.inode) else { continue };
            let o = owners.entry(pid).or_insert_with(|| {
                let mut o = process(&self.proc_root, pid, with_exe);
                if let Some(cg) = cgroups.as_deref_mut() {
                    lineage(&self.proc_root, &mut o, cg);
                }
                o
            });
            c.owner = Some(o.clone());
        }
    }
}

/// pid → comm, start time (and exe) of one process, as /proc shows it.
pub fn process(proc_root: &Path, pid: u32, with_exe: bool) -> Owner {
    let mut o = Owner::new(pid, comm_of(proc_root, pid), OwnerSource::Proc);
    o.pid_start = start_of(proc_root, pid);
    if with_exe {
        o.exe = exe(proc_root, pid);
    }
    o
}

/// What /proc says of a live holder beyond its name: its parent (stat
/// field 4 and the parent's comm), its PID in its own namespace (the last
/// `NSpid` of status) and its cgroup v2. Kernel-captured fields are kept;
/// the cgroup is resolved from the captured id when there is one.
pub fn lineage(proc_root: &Path, o: &mut Owner, cgroups: &mut Cgroups) {
    if let Some(id) = o.cgroup_id {
        if o.cgroup.is_none() {
            o.cgroup = Some(cgroups.resolve(proc_root, id, o.pid));
        }
        return;
    }
    let dir = proc_root.join(o.pid.to_string());
    if o.parent.is_none() {
        o.parent = parent_of(proc_root, o.pid);
    }
    if o.ns_pid.is_none() {
        o.ns_pid = std::fs::read(dir.join("status")).ok().and_then(|s| ns_pid(&s));
    }
    o.cgroup = cgroups.of_pid(proc_root, o.pid);
    o.cgroup_id = o.cgroup.as_ref().map(|c| c.id);
}

/// -b -v: the holder's ancestors, from /proc while they live, up to and
/// including the first outside the holder's container or unit (the
/// process that started it: `[nginx] <- [systemd]`). Left unset when the
/// holder is gone or its PID names another process now.
pub fn fill_ancestors(proc_root: &Path, o: &mut Owner, cgroups: &mut Cgroups) {
    let now = start_of(proc_root, o.pid);
    if now.is_none() || (o.pid_start.is_some() && now != o.pid_start) {
        return;
    }
    let home = o.cgroup.clone().or_else(|| cgroups.of_pid(proc_root, o.pid));
    let key = |c: Option<&crate::model::CgroupInfo>| {
        c.map(|c| (c.container.as_ref().map(|k| k.id.clone()), c.unit.clone()))
    };
    let home_key = key(home.as_deref());
    let mut chain = Vec::new();
    let mut pid = o.pid;
    for _ in 0..64 {
        let Some(p) = parent_of(proc_root, pid) else { break };
        let outside = key(cgroups.of_pid(proc_root, p.pid).as_deref()) != home_key;
        pid = p.pid;
        chain.push(p);
        if outside || pid == 1 {
            break;
        }
    }
    o.ancestors = Some(chain.into());
}

/// The parent of `pid` now (/proc/PID/stat field 4), named by its comm.
pub fn parent_of(proc_root: &Path, pid: u32) -> Option<Process> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let ppid = stat_field(&stat, 4)?.parse::<u32>().ok().filter(|&p| p != 0)?;
    Some(Process { pid: ppid, comm: comm_of(proc_root, ppid), pid_start: None })
}

/// /proc/PID/comm without its newline (empty when gone).
fn comm_of(proc_root: &Path, pid: u32) -> Comm {
    let mut comm = std::fs::read(proc_root.join(pid.to_string()).join("comm")).unwrap_or_default();
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    Comm::new(&comm)
}

/// Field `n` (1-based, n > 2) of /proc/PID/stat, after the comm.
fn stat_field(stat: &[u8], n: usize) -> Option<&str> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    std::str::from_utf8(&stat[close + 1..]).ok()?.split_ascii_whitespace().nth(n - 3)
}

/// The last `NSpid` of /proc/PID/status: the PID in its own namespace.
fn ns_pid(status: &[u8]) -> Option<u32> {
    let line = status.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"NSpid:"))?;
    std::str::from_utf8(line).ok()?.split_ascii_whitespace().last()?.parse().ok()
}

/// Field 22 of /proc/PID/stat (starttime, clock ticks after boot). The
/// comm before it is in parentheses and may hold ')' and spaces itself: the
/// fields start after the last ')'.
fn start_time(stat: &[u8]) -> Option<u64> {
    stat_field(stat, 22)?.parse().ok()
}

/// /proc/PID/exe, when it can be read.
pub fn exe(proc_root: &Path, pid: u32) -> Option<std::sync::Arc<Path>> {
    std::fs::read_link(proc_root.join(pid.to_string()).join("exe"))
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| std::sync::Arc::from(p.as_path()))
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

/// Which of `wanted` process `pid` holds now (one pass over its fds;
/// empty when it is gone).
pub fn held_by(proc_root: &Path, pid: u32, wanted: &HashSet<u64>) -> HashSet<u64> {
    let mut out = HashMap::new();
    read_links(proc_root, pid, &list_fds(proc_root, pid), wanted, &mut out);
    out.into_keys().collect()
}

/// `scan` over the given processes only.
pub fn scan_among(proc_root: &Path, pids: &[u32], wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    scan_parallel(proc_root, pids, wanted)
}

/// The start time of `pid` (/proc/PID/stat field 22), None when it is gone.
pub fn start_of(proc_root: &Path, pid: u32) -> Option<u64> {
    std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok().and_then(|s| start_time(&s))
}

/// The children of every thread of `pid` (/proc/PID/task/*/children).
pub fn children(proc_root: &Path, pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")) else { return Vec::new() };
    let mut out: Vec<u32> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| s.split_ascii_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Fds per work item: a process holding 10,000 sockets is split across
/// threads too, since the cost is the kernel's readlink of each fd.
const CHUNK: usize = 1024;

fn scan_parallel(proc_root: &Path, pids: &[u32], wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    // Listing (getdents) is cheap; the readlinks are spread over threads.
    let mut work: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut total = 0;
    for &pid in pids {
        let fds = list_fds(proc_root, pid);
        total += fds.len();
        work.extend(fds.chunks(CHUNK).map(|c| (pid, c.to_vec())));
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    let threads = if total < 4 * CHUNK { 1 } else { threads.min(work.len()) };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let maps: Vec<HashMap<u64, u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = HashMap::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((pid, fds)) = work.get(i) else { break };
                        read_links(proc_root, *pid, fds, wanted, &mut out);
                    }
                    out
                })
            })
            .collect();
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

fn fd_dir(proc_root: &Path, pid: u32) -> Option<CString> {
    let mut path = proc_root.as_os_str().as_bytes().to_vec();
    path.extend_from_slice(format!("/{pid}/fd").as_bytes());
    CString::new(path).ok()
}

/// The fd numbers of one process (empty when it is gone or not ours to read).
fn list_fds(proc_root: &Path, pid: u32) -> Vec<u32> {
    let Some(cpath) = fd_dir(proc_root, pid) else { return Vec::new() };
    let dfd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if dfd < 0 {
        return Vec::new();
    }
    let dir = unsafe { libc::fdopendir(dfd) };
    if dir.is_null() {
        unsafe { libc::close(dfd) };
        return Vec::new();
    }
    let mut fds = Vec::new();
    loop {
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            break;
        }
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if let Some(n) = std::str::from_utf8(name.to_bytes()).ok().and_then(|s| s.parse().ok()) {
            fds.push(n);
        }
    }
    unsafe { libc::closedir(dir) };
    fds
}

fn read_links(proc_root: &Path, pid: u32, fds: &[u32], wanted: &HashSet<u64>, out: &mut HashMap<u64, u32>) {
    let Some(cpath) = fd_dir(proc_root, pid) else { return };
    // readlinkat relative to the fd directory avoids a full path walk per
    // descriptor.
    let dfd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if dfd < 0 {
        return;
    }
    let mut link = [0u8; 64];
    let mut name = [0u8; 16];
    for &fd in fds {
        let digits = fd.to_string();
        name[..digits.len()].copy_from_slice(digits.as_bytes());
        name[digits.len()] = 0;
        let n = unsafe { libc::readlinkat(dfd, name.as_ptr().cast(), link.as_mut_ptr().cast(), link.len()) };
        if n <= 0 {
            continue;
        }
        if let Some(inode) = socket_inode(&link[..n as usize])
            && wanted.contains(&inode)
        {
            out.entry(inode).and_modify(|p: &mut u32| *p = (*p).min(pid)).or_insert(pid);
        }
    }
    unsafe { libc::close(dfd) };
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let rest = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Executables of the processes seen, read while they are alive (for -b),
/// by process identity (PID and start time): an exe is only ever shown for
/// the process it was read from. One whose process had exited, or whose PID
/// named another process by the time it was read, has none (the display
/// then shows the comm the kernel captured).
#[derive(Default)]
pub struct ExeCache {
    proc_root: PathBuf,
    by_proc: HashMap<(u32, Option<u64>), Option<Arc<Path>>>,
}

impl ExeCache {
    const MAX: usize = 65_536;

    pub fn new(proc_root: &Path) -> ExeCache {
        ExeCache { proc_root: proc_root.to_path_buf(), by_proc: HashMap::new() }
    }

    pub fn note(&mut self, pid: u32, start: Option<u64>) {
        if pid == 0 || self.by_proc.contains_key(&(pid, start)) {
            return;
        }
        if self.by_proc.len() >= Self::MAX {
            self.by_proc.clear();
        }
        let exe = exe(&self.proc_root, pid);
        // Read after the exe: if the start still matches, the exe was its.
        let now = start_of(&self.proc_root, pid);
        let exe = exe.filter(|_| now.is_some() && (start.is_none() || now == start));
        self.by_proc.insert((pid, start), exe);
    }

    pub fn insert(&mut self, o: &Owner) {
        self.by_proc.entry((o.pid, o.pid_start)).or_insert_with(|| o.exe.clone());
    }

    /// `o` with the executable seen for its process.
    pub fn fill(&self, o: &mut Owner) {
        if o.exe.is_none() {
            o.exe = self.by_proc.get(&(o.pid, o.pid_start)).cloned().flatten();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn start_time_survives_a_hostile_comm() {
        let stat = b"42 (a) b) (c) S 1 42 42 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 100 200";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time(b"42 (x"), None);
    }

    #[test]
    fn parent_and_namespace_pid_fields() {
        let stat = b"42 (a) b) (c) S 17 42 42 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 100 200";
        assert_eq!(stat_field(stat, 4), Some("17"));
        assert_eq!(ns_pid(b"Name:\tx\nNSpid:\t4242\t7\nNSsid:\t1\n"), Some(7));
        assert_eq!(ns_pid(b"Name:\tx\n"), None);
    }

    /// Our own process, against the kernel's own answers (getppid, the
    /// cgroup directory's inode).
    #[test]
    fn lineage_of_this_process() {
        let pid = std::process::id();
        let mut o = process(Path::new("/proc"), pid, false);
        let mut cg = Cgroups::new(Path::new("/proc"), Path::new("/"));
        lineage(Path::new("/proc"), &mut o, &mut cg);
        assert_eq!(o.parent.as_ref().map(|p| p.pid), Some(std::os::unix::process::parent_id()));
        let status = std::fs::read("/proc/self/status").unwrap();
        assert_eq!(o.ns_pid, ns_pid(&status));
        assert!(o.ns_pid.is_some());
        let mount = super::super::proc::mountinfo::cgroup2_root(Path::new("/proc")).expect("a cgroup v2 mount");
        let rel = std::fs::read("/proc/self/cgroup").unwrap();
        let rel = super::super::cgroup::v2_path(&rel).unwrap().to_vec();
        let dir = mount.join(std::str::from_utf8(&rel).unwrap().trim_start_matches('/'));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(o.cgroup_id, Some(std::fs::metadata(dir).unwrap().ino()));
        assert_eq!(o.cgroup.unwrap().path.as_deref(), Some(&rel[..]));
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
    }

    /// Enough sockets in one process that the readlinks are split over threads.
    #[test]
    fn a_process_with_many_sockets_is_scanned_in_chunks() {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let want = (5 * CHUNK) as u64;
        if lim.rlim_cur < want + 256 {
            lim.rlim_cur = (want + 256).min(lim.rlim_max);
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        }
        let mut fds = Vec::new();
        let mut wanted = HashSet::new();
        for _ in 0..want {
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
            wanted.insert(st.st_ino);
            fds.push(fd);
        }
        let m = scan(Path::new("/proc"), &wanted);
        for fd in fds {
            unsafe { libc::close(fd) };
        }
        assert_eq!(m.len(), wanted.len());
        assert!(m.values().all(|&p| p == std::process::id()));
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
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(o.comm.as_bytes(), comm.trim_end().as_bytes());
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let start: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
        assert_eq!(o.pid_start, Some(start));
    }
}
