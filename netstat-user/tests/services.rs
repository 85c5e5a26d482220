//! Services, containers and namespaces (issue 15): which unit or container
//! a connection belongs to, its owner's parent and PID in its own
//! namespace, and every network namespace with --all-namespaces. Real
//! processes in real cgroups under a private subtree of the cgroup v2 mount
//! (a host's systemd is never disturbed) and a real network and PID
//! namespace; the witnesses are /proc (PID/cgroup, stat's ppid, status'
//! NSpid), the cgroup directory's inode and `ss` inside the namespace.
//! vm: one backend (the fields are captured by the one owner routine every backend shares; tracer_backends compares every field across backends)
mod support;

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use support::*;

const DOCKER_ID: &str = "3f1a9c3f1a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";
const POD_UID: &str = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
const CRI_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// The cgroup v2 mount, from our own mountinfo (the test's reading, not
/// netstat's).
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ").then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
        })
        .expect("no cgroup v2 mount in /proc/self/mountinfo: this test needs one")
}

/// A private subtree of the cgroup v2 mount, removed (deepest first) on drop.
struct Subtree {
    mount: PathBuf,
    root: PathBuf,
    made: Vec<PathBuf>,
}

impl Subtree {
    fn new() -> Subtree {
        let mount = cgroup2_mount();
        let root = mount.join(format!("netstat-test-{}", name("svc")));
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Subtree { mount, made: vec![root.clone()], root }
    }

    /// `rel` under the subtree, made.
    fn cgroup(&mut self, rel: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in rel.split('/') {
            p.push(part);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                self.made.push(p.clone());
            }
        }
        p
    }

    /// The path netstat and /proc/PID/cgroup give for `dir`.
    fn rel(&self, dir: &Path) -> String {
        format!("/{}", dir.strip_prefix(&self.mount).unwrap().display())
    }
}

impl Drop for Subtree {
    fn drop(&mut self) {
        for d in self.made.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `cmd` started inside cgroup `dir` (it moves itself there before exec).
fn in_cgroup(dir: &Path, mut cmd: Command) -> Command {
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    cmd
}

fn hold(args: &[&str]) -> Command {
    let mut c = Command::new(load_bin());
    c.arg("hold").args(args);
    c
}

/// A started `hold`: its lines, and its ready line once it came.
fn ready(l: &Lines, what: &str) -> Value {
    let ok = l.wait_for(Duration::from_secs(20), |ls| ls.iter().any(|x| x.contains("\"ready\"")));
    assert!(ok, "{what}: hold never got ready: {:?}", l.lines());
    l.lines().iter().find_map(|x| serde_json::from_str::<Value>(x).ok().filter(|v| v["ready"] == true)).unwrap()
}

/// What /proc says of a live process: the independent witness.
#[derive(Debug, Clone, PartialEq)]
struct Witness {
    pid: u64,
    ppid: u64,
    parent_comm: String,
    ns_pid: u64,
    cgroup: String,
    cgroup_id: u64,
}

fn witness(pid: u64, mount: &Path) -> Witness {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let ppid: u64 = after.split(' ').nth(1).unwrap().parse().unwrap();
    let parent_comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap().trim_end().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ns_pid = status.lines().find_map(|l| l.strip_prefix("NSpid:")).unwrap().split_whitespace().last().unwrap().parse().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cgroup = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string();
    let cgroup_id = std::fs::metadata(mount.join(cgroup.trim_start_matches('/'))).unwrap().ino();
    Witness { pid, ppid, parent_comm, ns_pid, cgroup, cgroup_id }
}

/// A JSON row or event's place fields, checked against the witness.
fn check_place(what: &str, v: &Value, w: &Witness, unit: Option<&str>, container: Option<(&str, &str)>) {
    let want = |k: &str, x: Value| {
        assert_eq!(v[k], x, "{what}: {k} is {} but /proc says {x}: {v}", v[k]);
    };
    want("pid", w.pid.into());
    want("parent_pid", w.ppid.into());
    want("parent_comm", w.parent_comm.clone().into());
    want("ns_pid", w.ns_pid.into());
    want("cgroup", w.cgroup.clone().into());
    want("cgroup_id", w.cgroup_id.into());
    match unit {
        Some(u) => want("unit", u.into()),
        None => assert!(v.get("unit").is_none(), "{what}: no unit expected: {v}"),
    }
    match container {
        Some((rt, id)) => {
            assert_eq!(v["container"]["runtime"], rt, "{what}: {v}");
            assert_eq!(v["container"]["id"], id, "{what}: {v}");
        }
        None => assert!(v.get("container").is_none(), "{what}: no container expected: {v}"),
    }
}

fn our_comm() -> String {
    std::fs::read_to_string("/proc/self/comm").unwrap().trim_end().to_string()
}

fn run(args: &[&str]) -> (String, String) {
    let out = Command::new(netstat_bin()).args(args).output().unwrap();
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "netstat {args:?}: {}\n{err}", out.status);
    (text, err)
}

/// The index of the row with these local and foreign addresses.
fn row_at(lines: &[&str], local: &str, foreign: &str) -> Option<usize> {
    lines.iter().position(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3 && f[1] == local && f[2] == foreign
    })
}

/// The text lines under the row whose local and foreign addresses are
/// given, up to the next row.
fn under<'a>(text: &'a str, local: &str, foreign: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = text.lines().collect();
    let at = row_at(&lines, local, foreign).unwrap_or_else(|| panic!("no row {local} {foreign} in:\n{text}"));
    lines[at + 1..].iter().take_while(|l| !l.starts_with("  TCP ") && !l.starts_with("  UDP ")).copied().collect()
}

#[allow(dead_code)] // the processes and cgroups are held for their drop
/// The whole scene: a web server in `system.slice/websrv.service`, a
/// client of it in a docker scope, and a kubepods container in a network
/// and PID namespace of its own (listening and connected to itself).
struct Scene {
    srv: Lines,
    srv_name: String,
    srv_addr: String,
    cli: Lines,
    cli_name: String,
    /// The client's connection (local, remote).
    cli_conn: (String, String),
    kube: Lines,
    kube_name: String,
    kube_pid: u64,
    web: Witness,
    dock: Witness,
    pod: Witness,
    runtime_root: PathBuf,
    ns: Netns,
    /// Last: its cgroups are removed once the processes are gone.
    tree: Subtree,
}

impl Scene {
    fn start() -> Scene {
        let mut tree = Subtree::new();
        let web_cg = tree.cgroup("system.slice/websrv.service");
        let dock_cg = tree.cgroup(&format!("system.slice/docker-{DOCKER_ID}.scope"));
        let pod_slice = format!("kubepods-besteffort-pod{}.slice", POD_UID.replace('-', "_"));
        let kube_cg = tree.cgroup(&format!("kubepods.slice/kubepods-besteffort.slice/{pod_slice}/cri-containerd-{CRI_ID}.scope"));
        // Docker's own record of the container, where netstat reads its name.
        let runtime_root = std::env::temp_dir().join(format!("netstat-test-runtime-{}", name("rt")));
        let cfg = runtime_root.join(format!("var/lib/docker/containers/{DOCKER_ID}"));
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(cfg.join("config.v2.json"), r#"{"ID":"x","Name":"/web-client-1"}"#).unwrap();

        let (srv_name, cli_name, kube_name) = (name("websrv"), name("dockcli"), name("kubesrv"));
        let srv = Lines::spawn(in_cgroup(&web_cg, hold(&["--name", &srv_name, "--tcp-listen", "127.0.0.1:0", "--seconds", "120"])));
        let srv_ready = ready(&srv, "web server");
        let srv_addr = srv_ready["tcp_listen"][0].as_str().unwrap().to_string();
        let cli = Lines::spawn(in_cgroup(&dock_cg, hold(&["--name", &cli_name, "--tcp-connect", &srv_addr, "--seconds", "120"])));
        let cli_ready = ready(&cli, "docker client");
        let c = &cli_ready["tcp_connect"][0];
        let cli_conn = (c["local"].as_str().unwrap().to_string(), c["remote"].as_str().unwrap().to_string());
        let ns = Netns::new("svc");
        let kube_args = ["hold", "--name", &kube_name, "--tcp-listen", "127.0.0.1:7100", "--tcp-connect", "127.0.0.1:7100", "--pid-namespace", "--seconds", "120"];
        let kube = Lines::spawn(in_cgroup(&kube_cg, ns.cmd(&load_bin(), &kube_args)));
        let kube_ready = ready(&kube, "kubepods container");
        assert_eq!(kube_ready["ns_pid"], 1, "the holder is not PID 1 of its own namespace: {kube_ready}");
        let kube_pid = kube_ready["pid"].as_u64().unwrap();
        let web = witness(srv_ready["pid"].as_u64().unwrap(), &tree.mount);
        let dock = witness(cli_ready["pid"].as_u64().unwrap(), &tree.mount);
        let pod = witness(kube_pid, &tree.mount);
        assert_eq!(web.cgroup, tree.rel(&web_cg));
        assert_eq!(dock.cgroup, tree.rel(&dock_cg));
        assert_eq!(pod.cgroup, tree.rel(&kube_cg));
        assert_eq!(pod.ns_pid, 1);
        // Every connection established (the servers accept as they poll).
        std::thread::sleep(Duration::from_millis(500));
        Scene { tree, ns, runtime_root, srv, srv_name, srv_addr, cli, cli_name, cli_conn, kube, kube_name, kube_pid, web, dock, pod }
    }

    fn rt(&self) -> String {
        self.runtime_root.display().to_string()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

/// `-anob`, `-anob -v` and `--json` of the snapshot name each holder's unit
/// or container, its parent, namespace PID and cgroup as /proc does.
#[test]
fn snapshot_names_unit_container_and_parent() {
    let s = Scene::start();
    let rt = s.rt();
    let (text, _) = run(&["-anob", "-p", "tcp", "--runtime-root", &rt]);
    assert_eq!(under(&text, &s.srv_addr, "0.0.0.0:0"), ["  websrv.service", &format!(" [{}]", "netstat-load")], "{text}");
    let short = format!("  docker:{}", &DOCKER_ID[..12]);
    assert_eq!(under(&text, &s.cli_conn.0, &s.cli_conn.1), [short.as_str(), " [netstat-load]"], "{text}");
    // The other namespace's sockets are not ours to list by default.
    assert!(!text.contains("127.0.0.1:7100"), "another namespace's socket listed without --all-namespaces:\n{text}");

    let (text, _) = run(&["-anob", "-v", "-p", "tcp", "--runtime-root", &rt]);
    let exe = std::fs::read_link(format!("/proc/{}/exe", s.web.pid)).unwrap();
    let lineage = format!("  [{}] <- [{}]", s.srv_name, our_comm());
    assert_eq!(
        under(&text, &s.srv_addr, "0.0.0.0:0"),
        ["  websrv.service".to_string(), lineage, format!(" [{}]", exe.display())],
        "{text}"
    );

    let (json, _) = run(&["-ano", "--json", "--runtime-root", &rt]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    schema::check(&doc, "connections_document");
    let rows = doc["connections"].as_array().unwrap();
    let row = |local: &str, remote: &str| {
        rows.iter().find(|r| ep(&r["local"]) == local && ep(&r["remote"]) == remote).unwrap_or_else(|| panic!("no row {local} {remote}"))
    };
    check_place("listener", row(&s.srv_addr, "0.0.0.0:0"), &s.web, Some("websrv.service"), None);
    let dock = row(&s.cli_conn.0, &s.cli_conn.1);
    check_place("docker client", dock, &s.dock, Some(&format!("docker-{DOCKER_ID}.scope")), Some(("docker", DOCKER_ID)));
    assert_eq!(dock["container"]["name"], "web-client-1", "{dock}");
    // The server's accepted end is the server's.
    check_place("accepted", row(&s.cli_conn.1, &s.cli_conn.0), &s.web, Some("websrv.service"), None);
}

/// --all-namespaces lists the kubepods container's sockets (ss inside its
/// namespace is the witness) with the container in the Namespace column,
/// its PID 1 as ns_pid and the pod's uid.
#[test]
fn all_namespaces_lists_other_namespaces_with_their_container() {
    let s = Scene::start();
    let ss = s.ns.cmd("ss", &["-tanH"]).output().unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    let ss_rows: Vec<(String, String)> =
        ss.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).map(|f| (f[3].to_string(), f[4].to_string())).collect();
    assert_eq!(ss_rows.len(), 3, "the namespace's own ss: {ss}");
    let (text, _) = run(&["-ano", "-p", "tcp", "--all-namespaces"]);
    let header = text.lines().find(|l| l.contains("Proto")).unwrap();
    assert!(header.trim_end().ends_with("Namespace"), "{header}");
    let label = format!("containerd:{}", &CRI_ID[..12]);
    for (local, remote) in &ss_rows {
        let remote = if remote == "0.0.0.0:*" { "0.0.0.0:0" } else { remote };
        let lines: Vec<&str> = text.lines().collect();
        let line = row_at(&lines, local, remote)
            .map(|i| lines[i])
            .unwrap_or_else(|| panic!("ss lists {local} {remote} in the namespace, --all-namespaces does not:\n{text}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.last(), Some(&label.as_str()), "{line}");
        assert_eq!(f[f.len() - 2], s.kube_pid.to_string(), "{line}");
    }
    // -b names the container above the executable there too.
    let (text, _) = run(&["-anob", "-p", "tcp", "--all-namespaces"]);
    assert_eq!(under(&text, "127.0.0.1:7100", "0.0.0.0:0"), [format!("  {label}").as_str(), " [netstat-load]"], "{text}");
    // Our own namespace's rows are labelled with its inode.
    let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let srv = text.lines().find(|l| l.contains(&s.srv_addr)).unwrap_or_else(|| panic!("{text}"));
    assert!(srv.trim_end().ends_with(&own.to_string()), "{srv}");

    let (json, _) = run(&["-ano", "--json", "--all-namespaces"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    schema::check(&doc, "connections_document");
    let theirs: Vec<&Value> = doc["connections"].as_array().unwrap().iter().filter(|r| r["netns"] == s.ns.inode()).collect();
    assert_eq!(theirs.len(), 3, "{theirs:?}");
    for r in theirs {
        check_place("pod socket", r, &s.pod, Some(&format!("cri-containerd-{CRI_ID}.scope")), Some(("containerd", CRI_ID)));
        assert_eq!(r["container"]["pod"], POD_UID, "{r}");
        assert_eq!(r["comm"], s.kube_name.as_str());
    }
}

/// The stream names unit, container, parent and namespace PID on every
/// event of the scene, from the kernel's capture, including the closes
/// made by the exiting processes; it covers other namespaces only with
/// --all-namespaces; and the live table's closed rows keep all of it after
/// the processes are gone.
#[test]
fn stream_and_live_table_keep_the_place_after_exit() {
    let mine = Stream::start(&[]);
    let all = Stream::start(&["--all-namespaces"]);
    let table = Lines::spawn({
        let mut c = Command::new(netstat_bin());
        c.args(["-ano", "1", "--json", "--all-namespaces"]);
        c
    });
    assert!(table.wait_for(Duration::from_secs(60), |l| !displays(l).is_empty()), "no first display");
    let s = Scene::start();
    let n = displays(&table.lines()).len();
    assert!(table.wait_for(Duration::from_secs(20), |l| displays(l).len() >= n + 2), "displays stopped");
    // The holders exit (the kernel closes their sockets in their exit).
    let (web, dock, pod) = (s.web.clone(), s.dock.clone(), s.pod.clone());
    let (srv_name, cli_name, kube_name) = (s.srv_name.clone(), s.cli_name.clone(), s.kube_name.clone());
    let ns_inode = s.ns.inode();
    unsafe {
        libc::kill(web.pid as i32, libc::SIGKILL);
        libc::kill(dock.pid as i32, libc::SIGKILL);
        // The holder itself, before its parent: a process whose parent
        // exits first is reparented, and its closes name the new parent.
        libc::kill(pod.pid as i32, libc::SIGKILL);
    }
    let gone = |pid: u64| !Path::new(&format!("/proc/{pid}/stat")).exists() || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z");
    for _ in 0..100 {
        if gone(web.pid) && gone(dock.pid) && gone(pod.pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = displays(&table.lines()).len();
    assert!(table.wait_for(Duration::from_secs(20), |l| displays(l).len() >= n + 2), "displays stopped");
    std::thread::sleep(Duration::from_millis(300));
    let mine = mine.stop();
    let all = all.stop();
    let docs = displays(&table.stop());

    let who: [(&str, &Witness, Option<String>, Option<(&str, &str)>); 3] = [
        (&srv_name, &web, Some("websrv.service".into()), None),
        (&cli_name, &dock, Some(format!("docker-{DOCKER_ID}.scope")), Some(("docker", DOCKER_ID))),
        (&kube_name, &pod, Some(format!("cri-containerd-{CRI_ID}.scope")), Some(("containerd", CRI_ID))),
    ];
    for (comm, w, unit, cont) in &who {
        let evs: Vec<&Value> = all.iter().filter(|e| e["comm"] == *comm && e["type"] != "lost").collect();
        assert!(evs.iter().any(|e| e["new_state"] == "ESTABLISHED" || e["new_state"] == "LISTENING"), "{comm}: no events: {}", closest(&all, comm));
        let closes: Vec<&&Value> = evs.iter().filter(|e| matches!(e["new_state"].as_str(), Some("FIN_WAIT_1" | "CLOSED" | "LAST_ACK"))).collect();
        assert!(!closes.is_empty(), "{comm}: no close in the stream after the exit: {evs:?}");
        for e in &evs {
            check_place(&format!("{comm} event"), e, w, unit.as_deref(), *cont);
        }
        let in_theirs = evs.iter().all(|e| e["netns"] == ns_inode);
        let in_mine = mine.iter().any(|e| e["comm"] == *comm);
        if *comm == kube_name.as_str() {
            assert!(in_theirs, "{comm}: events outside its namespace");
            assert!(!in_mine, "{comm}: the default stream showed another namespace's events");
        } else {
            assert!(in_mine, "{comm}: the default stream lost our own namespace's events");
        }
    }
    // Closed since last display, after the exit: the kernel's capture.
    let closed: Vec<&Value> = docs.iter().flat_map(|d| d["closed"].as_array().unwrap()).collect();
    for (comm, w, unit, cont) in &who {
        let rows: Vec<&&Value> = closed.iter().filter(|c| c["comm"] == *comm).collect();
        assert!(!rows.is_empty(), "{comm}: no closed row after its exit");
        for r in rows {
            check_place(&format!("{comm} closed row"), r, w, unit.as_deref(), *cont);
        }
    }
}

/// A cgroup gone before netstat resolves it shows its id (the kernel's
/// capture) in the stream, and no path or unit it could not read.
#[test]
fn a_cgroup_gone_before_it_is_resolved_shows_its_id() {
    let mut tree = Subtree::new();
    let stream = Stream::start(&[]);
    // Made while the stream is stopped: it cannot have seen it before.
    stream.signal(libc::SIGSTOP);
    let cg = tree.cgroup("system.slice/shortlived.service");
    let id = std::fs::metadata(&cg).unwrap().ino();
    let who = name("gonesvc");
    let mut c = in_cgroup(&cg, Command::new(load_bin()));
    c.args(["udp", "--name", &who, "--bind", "127.0.0.1:0"]);
    assert!(c.status().unwrap().success());
    std::fs::remove_dir(&cg).expect("rmdir the emptied cgroup");
    // Longer than the resolver's walk interval: the event's miss walks the
    // tree (after the removal) instead of waiting for the next walk.
    std::thread::sleep(Duration::from_millis(400));
    stream.signal(libc::SIGCONT);
    assert!(stream.wait_for(Duration::from_secs(10), |ev| ev.iter().any(|e| e["comm"] == who.as_str())), "no event of {who}");
    let events = stream.stop();
    let e = events.iter().find(|e| e["comm"] == who.as_str()).unwrap();
    assert_eq!(e["cgroup_id"], id, "{e}");
    assert!(e.get("cgroup").is_none() && e.get("unit").is_none(), "a removed cgroup cannot be named: {e}");
    drop(tree);
}

/// Without CAP_SYS_ADMIN the other namespaces cannot be entered: one line
/// on stderr and exit status 2, never a table that silently shows ours only.
#[test]
fn all_namespaces_without_the_privilege_is_one_line_and_exit_2() {
    let _ns = Netns::new("priv");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(netstat_bin())
        .args(["-an", "--all-namespaces", "--no-trace"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--all-namespaces needs CAP_SYS_ADMIN and CAP_SYS_PTRACE"), "{err}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A hostile unit name (terminal escapes, a bidirectional override) is
/// escaped as comm is, in -b's line and in JSON.
#[test]
fn hostile_cgroup_names_are_escaped() {
    let mut tree = Subtree::new();
    let raw = "ev\x1b[2Jil\u{202e}.service";
    let cg = tree.cgroup(&format!("system.slice/{raw}"));
    let who = name("hostile");
    let l = Lines::spawn(in_cgroup(&cg, hold(&["--name", &who, "--tcp-listen", "127.0.0.1:0", "--seconds", "60"])));
    let addr = ready(&l, "hostile")["tcp_listen"][0].as_str().unwrap().to_string();
    let (text, _) = run(&["-anob", "-p", "tcp"]);
    for c in text.chars() {
        assert!(c == '\n' || !c.is_control() && c != '\u{202e}', "{c:?} reached the output:\n{text}");
    }
    let escaped = "  ev\\x1b[2Jil\\u{202e}.service";
    assert_eq!(under(&text, &addr, "0.0.0.0:0"), [escaped, " [netstat-load]"], "{text}");
    let (json, _) = run(&["-anop", "tcp", "--json"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    schema::check(&doc, "connections_document");
    let row = doc["connections"].as_array().unwrap().iter().find(|r| ep(&r["local"]) == addr).unwrap();
    assert_eq!(row["unit"], "ev\\x1b[2Jil\\u{202e}.service", "{row}");
    assert!(row["cgroup"].as_str().unwrap().ends_with("/system.slice/ev\\x1b[2Jil\\u{202e}.service"), "{row}");
    drop(l);
    drop(tree);
}
