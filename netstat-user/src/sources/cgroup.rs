//! Which cgroup, systemd unit and container a process belongs to. Cgroup v2
//! ids (the kernel's `bpf_get_current_cgroup_id`, the inode of the cgroup's
//! directory) and paths are resolved against the cgroup v2 mount found in
//! /proc/self/mountinfo; the unit and the container are read off the
//! path's shape; a container's name comes from its runtime's own files on
//! the host, never from a daemon. Cached by id: ids are never reused.
use std::{
    collections::HashMap,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::proc::mountinfo::cgroup2_root;
use crate::model::{CgroupInfo, Container};

/// A walk of the whole cgroup tree, to find an id no live process names,
/// happens at most this often (a flood of events from new cgroups costs one
/// walk per interval; what a walk finds stays cached).
const WALK_EVERY: Duration = Duration::from_millis(200);
/// Bounds on a walk: a hostile or huge tree costs bounded time.
const WALK_MAX_DIRS: usize = 200_000;
const WALK_MAX_DEPTH: usize = 64;

/// Resolves cgroup ids and paths, cached.
pub struct Cgroups {
    /// The cgroup v2 mount point; None on a host without one.
    mount: Option<PathBuf>,
    /// Where the container runtimes' state lives (`/` on a real host).
    runtime_root: PathBuf,
    by_id: HashMap<u64, Arc<CgroupInfo>>,
    walked: Option<Instant>,
}

impl Cgroups {
    pub fn new(proc_root: &Path, runtime_root: &Path) -> Cgroups {
        Cgroups { mount: cgroup2_root(proc_root).ok(), runtime_root: runtime_root.to_path_buf(), by_id: HashMap::new(), walked: None }
    }

    /// What cgroup `id` is. One that is gone (or on a host without cgroup
    /// v2) has its id only.
    pub fn by_id(&mut self, id: u64) -> Arc<CgroupInfo> {
        if let Some(c) = self.by_id.get(&id) {
            return c.clone();
        }
        if self.mount.is_none() {
            // Nothing can ever be resolved here: remember the id alone.
            let bare = Arc::new(CgroupInfo { id, ..Default::default() });
            self.by_id.insert(id, bare.clone());
            return bare;
        }
        let due = self.walked.is_none_or(|t| t.elapsed() >= WALK_EVERY);
        if due {
            self.walk();
            if let Some(c) = self.by_id.get(&id) {
                return c.clone();
            }
            // Walked after the event that named it: the cgroup is gone, and
            // its id will never name another.
            let gone = Arc::new(CgroupInfo { id, gone: true, ..Default::default() });
            self.by_id.insert(id, gone.clone());
            return gone;
        }
        // A walk is not due: the id alone for now (not cached: the next
        // event tries again).
        Arc::new(CgroupInfo { id, ..Default::default() })
    }

    /// `by_id` for an event of process `pid`: while it lives, its own
    /// /proc/PID/cgroup names a new cgroup without a walk of the tree.
    pub fn resolve(&mut self, proc_root: &Path, id: u64, pid: u32) -> Arc<CgroupInfo> {
        if let Some(c) = self.by_id.get(&id) {
            return c.clone();
        }
        match self.of_pid(proc_root, pid) {
            Some(c) if c.id == id => c,
            _ => self.by_id(id),
        }
    }

    /// The cgroup at `rel` (relative to the mount, as /proc/PID/cgroup
    /// writes it), when it exists.
    pub fn by_path(&mut self, rel: &[u8]) -> Option<Arc<CgroupInfo>> {
        let mount = self.mount.as_ref()?;
        let full = join(mount, rel);
        let id = std::fs::symlink_metadata(&full).ok()?.ino();
        if let Some(c) = self.by_id.get(&id) {
            return Some(c.clone());
        }
        let info = Arc::new(describe(id, rel, &self.runtime_root));
        self.by_id.insert(id, info.clone());
        Some(info)
    }

    /// The cgroup v2 of process `pid` now (its `0::` line).
    pub fn of_pid(&mut self, proc_root: &Path, pid: u32) -> Option<Arc<CgroupInfo>> {
        let raw = std::fs::read(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        let rel = v2_path(&raw)?;
        self.by_path(rel)
    }

    fn walk(&mut self) {
        self.walked = Some(Instant::now());
        let Some(mount) = self.mount.clone() else { return };
        let mut stack: Vec<(PathBuf, usize)> = vec![(mount.clone(), 0)];
        let mut seen = 0;
        while let Some((dir, depth)) = stack.pop() {
            seen += 1;
            if seen > WALK_MAX_DIRS {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&dir) else { continue };
            let id = meta.ino();
            if !self.by_id.contains_key(&id) {
                let rel = dir.strip_prefix(&mount).map(|r| r.as_os_str().as_bytes().to_vec()).unwrap_or_default();
                let mut path = Vec::with_capacity(rel.len() + 1);
                path.push(b'/');
                path.extend_from_slice(&rel);
                self.by_id.insert(id, Arc::new(describe(id, &path, &self.runtime_root)));
            }
            if depth >= WALK_MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
}

/// `mount` joined with `rel` (which starts with '/').
fn join(mount: &Path, rel: &[u8]) -> PathBuf {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    mount.join(std::ffi::OsStr::from_bytes(rel))
}

/// The path of the `0::` (cgroup v2) line of /proc/PID/cgroup.
pub fn v2_path(raw: &[u8]) -> Option<&[u8]> {
    raw.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"0::"))
}

/// Everything the path `rel` says, with the container's name looked up.
pub fn describe(id: u64, rel: &[u8], runtime_root: &Path) -> CgroupInfo {
    let mut container = container_of(rel);
    if let Some(c) = &mut container {
        c.name = container_name(runtime_root, c);
    }
    CgroupInfo { id, path: Some(rel.into()), unit: unit_of(rel), container, gone: false, encoded: Default::default() }
}

const UNIT_SUFFIXES: [&[u8]; 3] = [b".service", b".scope", b".socket"];

/// The innermost systemd unit on the path (`nginx.service` in
/// `/system.slice/nginx.service`, `app.service` in
/// `/user.slice/user-1000.slice/user@1000.service/app.slice/app.service`).
pub fn unit_of(rel: &[u8]) -> Option<Box<str>> {
    rel.split(|&b| b == b'/')
        .rev()
        .find(|c| UNIT_SUFFIXES.iter().any(|s| c.len() > s.len() && c.ends_with(s)))
        .and_then(|c| std::str::from_utf8(c).ok())
        .map(Box::from)
}

fn is_id(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|c| c.is_ascii_hexdigit())
}

/// A container id in a systemd scope: `PREFIX<64 hex>.scope`.
fn scoped_id<'a>(c: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let id = c.strip_prefix(prefix)?.strip_suffix(b".scope")?;
    is_id(id).then_some(id)
}

/// A kubepods pod's uid: `pod<uid>` (cgroupfs driver) or
/// `kubepods-<class>-pod<uid_with_underscores>.slice` (systemd driver).
fn pod_uid(c: &[u8]) -> Option<Box<str>> {
    let s = std::str::from_utf8(c).ok()?;
    let at = s.rfind("pod")?;
    let uid = s[at + 3..].strip_suffix(".slice").unwrap_or(&s[at + 3..]);
    let ok = !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    (ok && (at == 0 || s.starts_with("kubepods"))).then(|| uid.replace('_', "-").into())
}

/// The container the path names, matched anywhere in it (the innermost
/// one wins): `docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, and a bare id under a kubepods
/// pod. The name is left for `container_name`.
pub fn container_of(rel: &[u8]) -> Option<Container> {
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
    let mut found = None;
    let mut pod: Option<Box<str>> = None;
    let mut in_kubepods = false;
    for (i, c) in parts.iter().enumerate() {
        if c.starts_with(b"kubepods") {
            in_kubepods = true;
        }
        if in_kubepods && let Some(uid) = pod_uid(c) {
            pod = Some(uid);
            continue;
        }
        let hit = [(&b"docker-"[..], "docker"), (b"cri-containerd-", "containerd"), (b"crio-", "cri-o"), (b"libpod-", "podman")]
            .iter()
            .find_map(|(p, rt)| scoped_id(c, p).map(|id| (*rt, id)))
            .or_else(|| (i > 0 && parts[i - 1] == b"docker" && is_id(c)).then_some(("docker", *c)))
            .or_else(|| (pod.is_some() && is_id(c)).then_some(("cri", *c)));
        if let Some((runtime, id)) = hit {
            let id = std::str::from_utf8(id).unwrap_or_default();
            found = Some(Container { runtime, id: id.to_ascii_lowercase().into(), name: None, pod: pod.clone() });
        }
    }
    found
}

/// A runtime's name as `Container::runtime` spells it (a stored one read
/// back); `cri` for one this build does not know.
pub fn runtime_name(s: &str) -> &'static str {
    ["docker", "containerd", "cri-o", "podman"].into_iter().find(|r| *r == s).unwrap_or("cri")
}

/// Longest runtime file read for a name: a container's config is small.
const MAX_CONFIG: u64 = 4 << 20;

fn read_small(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(p).ok()?;
    let mut out = Vec::new();
    f.take(MAX_CONFIG).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The container's name from its runtime's own state on the host:
/// docker's `containers/<id>/config.v2.json` (`Name`), podman's
/// `overlay-containers/containers.json` (`names`), and the Kubernetes
/// container name the CRI runtimes write into the bundle's OCI
/// `config.json` annotations (containerd's task directory, CRI-O's
/// `userdata`).
pub fn container_name(root: &Path, c: &Container) -> Option<Box<[u8]>> {
    let id = &*c.id;
    let json = |rel: String| -> Option<serde_json::Value> { serde_json::from_slice(&read_small(&root.join(rel))?).ok() };
    let annotation = |v: serde_json::Value| -> Option<String> {
        let a = v.get("annotations")?;
        a.get("io.kubernetes.cri.container-name").or_else(|| a.get("io.kubernetes.container.name"))?.as_str().map(String::from)
    };
    let name: Option<String> = match c.runtime {
        "docker" => json(format!("var/lib/docker/containers/{id}/config.v2.json"))
            .and_then(|v| v.get("Name")?.as_str().map(|n| n.trim_start_matches('/').to_string())),
        "podman" => json("var/lib/containers/storage/overlay-containers/containers.json".into()).and_then(|v| {
            v.as_array()?
                .iter()
                .find(|e| e.get("id").and_then(|i| i.as_str()) == Some(id))?
                .get("names")?
                .get(0)?
                .as_str()
                .map(String::from)
        }),
        "containerd" | "cri" => json(format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"))
            .and_then(annotation)
            .or_else(|| json(format!("run/containers/storage/overlay-containers/{id}/userdata/config.json")).and_then(annotation)),
        "cri-o" => json(format!("run/containers/storage/overlay-containers/{id}/userdata/config.json")).and_then(annotation),
        _ => None,
    };
    name.filter(|n| !n.is_empty()).map(|n| n.into_bytes().into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1a9c3f1a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";

    #[test]
    fn units_are_the_innermost_on_the_path() {
        assert_eq!(unit_of(b"/system.slice/nginx.service").as_deref(), Some("nginx.service"));
        assert_eq!(unit_of(b"/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope").as_deref(), Some("app-foo.scope"));
        assert_eq!(unit_of(b"/user.slice/user-1000.slice/session-3.scope").as_deref(), Some("session-3.scope"));
        assert_eq!(unit_of(b"/system.slice/sshd.socket").as_deref(), Some("sshd.socket"));
        assert_eq!(unit_of(b"/system.slice/foo.service/worker").as_deref(), Some("foo.service"));
        assert_eq!(unit_of(b"/"), None);
        assert_eq!(unit_of(b"/system.slice"), None);
        assert_eq!(unit_of(b"/.service"), None);
    }

    fn cont(path: &str) -> Option<(&'static str, String, Option<String>)> {
        container_of(path.as_bytes()).map(|c| (c.runtime, c.id.to_string(), c.pod.map(|p| p.to_string())))
    }

    #[test]
    fn every_runtime_path_shape() {
        let d = |rt| Some((rt, ID.to_string(), None));
        assert_eq!(cont(&format!("/system.slice/docker-{ID}.scope")), d("docker"));
        assert_eq!(cont(&format!("/docker/{ID}")), d("docker"));
        assert_eq!(cont(&format!("/system.slice/cri-containerd-{ID}.scope")), d("containerd"));
        assert_eq!(cont(&format!("/machine.slice/libpod-{ID}.scope/container")), d("podman"));
        assert_eq!(cont(&format!("/system.slice/crio-{ID}.scope")), d("cri-o"));
        // kubepods, systemd driver: the pod's uid with underscores for dashes.
        let k = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(cont(&k), Some(("containerd", ID.to_string(), Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901".into()))));
        // kubepods, cgroupfs driver: a bare id under the pod.
        let k = format!("/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{ID}");
        assert_eq!(cont(&k), Some(("cri", ID.to_string(), Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901".into()))));
        // Anywhere in the path, innermost wins (docker in a kubepods pod, nested).
        assert_eq!(cont(&format!("/netstat-test/x/system.slice/docker-{ID}.scope")), d("docker"));
        let inner = ID.replace('3', "4");
        assert_eq!(cont(&format!("/docker/{ID}/docker/{inner}")).map(|c| c.1), Some(inner));
    }

    #[test]
    fn near_misses_are_no_container() {
        assert_eq!(cont("/system.slice/docker.service"), None);
        assert_eq!(cont(&format!("/system.slice/docker-{}.scope", &ID[..63])), None);
        assert_eq!(cont(&format!("/system.slice/libpod-conmon-{ID}.scope")), None);
        assert_eq!(cont(&format!("/system.slice/docker-{}z.scope", &ID[..63])), None);
        assert_eq!(cont(&format!("/notdocker/{ID}")), None);
        assert_eq!(cont(&format!("/system.slice/{ID}")), None);
        assert_eq!(cont("/"), None);
    }

    #[test]
    fn hostile_names_stay_raw_until_printed() {
        let rel = b"/system.slice/evil\x1b[31m\n.service";
        let d = describe(9, rel, Path::new("/nonexistent"));
        assert_eq!(d.path.as_deref(), Some(&rel[..]));
        assert_eq!(d.unit.as_deref(), Some("evil\x1b[31m\n.service"));
        assert_eq!(crate::escape::escape(d.unit.as_deref().unwrap()), "evil\\x1b[31m\\n.service");
        // Invalid UTF-8 is no unit (it could not be named), the path keeps it.
        assert_eq!(unit_of(b"/system.slice/\xff.service"), None);
    }

    #[test]
    fn proc_cgroup_lines() {
        assert_eq!(v2_path(b"12:pids:/\n0::/system.slice/a.service\n"), Some(&b"/system.slice/a.service"[..]));
        assert_eq!(v2_path(b"12:pids:/\n"), None);
    }

    fn tempdir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("netstat-cgroup-unit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_from_the_runtimes_own_files() {
        let root = tempdir();
        let c = |rt| Container { runtime: rt, id: ID.into(), name: None, pod: None };
        let dock = root.join(format!("var/lib/docker/containers/{ID}"));
        std::fs::create_dir_all(&dock).unwrap();
        std::fs::write(dock.join("config.v2.json"), r#"{"ID":"x","Name":"/web-1"}"#).unwrap();
        assert_eq!(container_name(&root, &c("docker")).as_deref(), Some(&b"web-1"[..]));
        let pod = root.join("var/lib/containers/storage/overlay-containers");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("containers.json"), format!(r#"[{{"id":"{ID}","names":["db"]}}]"#)).unwrap();
        assert_eq!(container_name(&root, &c("podman")).as_deref(), Some(&b"db"[..]));
        let task = root.join(format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}"));
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(task.join("config.json"), r#"{"annotations":{"io.kubernetes.cri.container-name":"api"}}"#).unwrap();
        assert_eq!(container_name(&root, &c("containerd")).as_deref(), Some(&b"api"[..]));
        assert_eq!(container_name(&root, &c("cri-o")), None);
        std::fs::write(dock.join("config.v2.json"), "not json").unwrap();
        assert_eq!(container_name(&root, &c("docker")), None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
