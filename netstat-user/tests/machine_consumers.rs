//! The parsers people feed Windows netstat output to, fed ours: jc's
//! Windows parser (`jc --netstat`, from PyPI in a virtual environment of
//! our own), Perl's Parse::Netstat (Debian's libparse-netstat-perl, flavor
//! `win32`) and a split on two or more spaces (PowerShell's `-split
//! '\s{2,}'`). Every row must come out with its fields, integer PIDs and
//! the right program names. The setup installs what it needs (idempotent)
//! and fails, never skips, when an install fails.
//! vm: host only (needs tools the guest has not)
mod fixture;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde_json::Value;

const JC_VERSION: &str = "1.26.1";

fn fixtures() -> PathBuf {
    fixture::fixtures()
}

fn ours(args: &[&str]) -> String {
    fixture::ok("basic", args)
}

fn sh(cmd: &str) -> bool {
    Command::new("sh").args(["-c", cmd]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn apt_install(pkgs: &[&str]) {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        assert!(Command::new("apt-get").args(["update", "-qq"]).status().is_ok_and(|s| s.success()), "apt-get update failed");
        assert!(install(), "apt-get install {pkgs:?} failed");
    }
}

/// Debian's python3 with venv, Parse::Netstat, and jc in a venv under
/// the target directory; the path of the `jc` executable.
fn setup() -> &'static Path {
    static JC: OnceLock<PathBuf> = OnceLock::new();
    JC.get_or_init(|| {
        let mut missing = Vec::new();
        if !sh("/usr/bin/python3 -c 'import ensurepip, venv'") {
            missing.push("python3-venv");
        }
        if !sh("perl -MParse::Netstat -e 1") {
            missing.push("libparse-netstat-perl");
        }
        if !missing.is_empty() {
            apt_install(&missing);
        }
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jc-venv");
        let jc = venv.join("bin/jc");
        let have = |jc: &Path| {
            Command::new(jc).arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(JC_VERSION))
        };
        if !have(&jc) {
            let _ = std::fs::remove_dir_all(&venv);
            let ok = Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
            assert!(ok, "python3 -m venv {} failed", venv.display());
            let ok = Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", &format!("jc=={JC_VERSION}")])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install jc=={JC_VERSION} failed");
            assert!(have(&jc), "{} does not run after installing it", jc.display());
        }
        jc
    })
}

fn pipe(cmd: &mut Command, input: &str) -> String {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn parser");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}\ninput:\n{input}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn jc(text: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&pipe(Command::new(setup()).arg("--netstat"), text)).unwrap();
    v.as_array().unwrap().clone()
}

/// Parse::Netstat's win32 result: (status, connections).
fn parse_netstat(text: &str) -> (u64, Vec<Value>) {
    setup();
    let script = r#"use Parse::Netstat qw(parse_netstat); use JSON::PP; local $/; my $in = <STDIN>;
        print JSON::PP->new->canonical->encode(parse_netstat(output => $in, flavor => "win32"));"#;
    let v: Value = serde_json::from_str(&pipe(Command::new("perl").args(["-e", script]), text)).unwrap();
    (v[0].as_u64().unwrap(), v[2]["active_conns"].as_array().cloned().unwrap_or_default())
}

/// A row split on two or more spaces, addresses split at their last colon:
/// [proto, local host, local port, foreign host, foreign port, state, pid]
/// (state and pid empty where the row has none).
fn split_row(line: &str, with_pid: bool) -> Vec<String> {
    let f: Vec<&str> = line.trim().split("  ").map(str::trim).filter(|s| !s.is_empty()).collect();
    let want = 3 + usize::from(f[0] == "TCP") + usize::from(with_pid);
    assert_eq!(f.len(), want, "{line:?} splits on two spaces into {f:?}");
    let (l, r) = (f[1].rsplit_once(':').unwrap(), f[2].rsplit_once(':').unwrap());
    let (state, pid) = match (f[0], with_pid) {
        ("TCP", true) => (f[3], f[4]),
        ("TCP", false) => (f[3], ""),
        (_, true) => ("", f[3]),
        (_, false) => ("", ""),
    };
    [f[0], l.0, l.1, r.0, r.1, state, pid].map(String::from).to_vec()
}

fn rows(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("  TCP ") || l.starts_with("  UDP ")).collect()
}

/// Our JSON for the same display: PID (0 for null), `[exe name]` and the
/// local port per row.
fn truth(args: &[&str]) -> Vec<(u64, Option<String>, u64)> {
    let mut a = args.to_vec();
    a.push("--json");
    let v: Value = serde_json::from_str(&ours(&a)).unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let exe = c["exe"].as_str().map(|p| format!("[{}]", p.rsplit('/').next().unwrap()));
            let exe = exe.or_else(|| c["comm"].as_str().map(|n| format!("[{n}]")));
            (c["pid"].as_u64().unwrap_or(0), exe, c["local"]["port"].as_u64().unwrap())
        })
        .collect()
}

fn check_jc(args: &[&str], with_pid: bool) {
    let text = ours(args);
    let lines = rows(&text);
    let parsed = jc(&text);
    assert_eq!(parsed.len(), lines.len(), "jc --netstat on netstat {args:?} gave {} rows for {}:\n{text}", parsed.len(), lines.len());
    let want = truth(args);
    for ((p, line), (pid, exe, port)) in parsed.iter().zip(&lines).zip(&want) {
        // The local port stays a number with or without -n (grep :5432).
        assert_eq!(p["local_port_num"].as_u64(), Some(*port), "jc's local port for {line:?}: {p}");
        let f = split_row(line, with_pid);
        let got = [&p["proto"], &p["local_address"], &p["local_port"], &p["foreign_address"], &p["foreign_port"]];
        assert_eq!(got.map(|v| v.as_str().unwrap_or("").to_string()).to_vec(), f[..5].to_vec(), "jc vs split on {line:?}: {p}");
        assert_eq!(p["state"].as_str().unwrap_or(""), f[5], "state of {line:?}: {p}");
        if with_pid {
            assert_eq!(p["pid"].as_u64(), Some(*pid), "jc's pid for {line:?}: {p}");
        }
        if args.iter().any(|a| a.contains('b')) {
            let name = p.get("program_name").and_then(Value::as_str);
            let held = !(line.contains("TIME_WAIT") && *pid == 0);
            let want = match exe {
                Some(e) => Some(e.as_str()),
                None if held => Some("Can not obtain ownership information"),
                None => None,
            };
            assert_eq!(name, want, "jc's program_name for {line:?}: {p}");
        }
    }
}

#[test]
fn jc_reads_every_row_of_an() {
    check_jc(&["-an"], false);
}

#[test]
fn jc_reads_every_row_of_ano_with_integer_pids() {
    check_jc(&["-ano"], true);
}

#[test]
fn jc_reads_every_row_of_anob_with_program_names() {
    check_jc(&["-anob"], true);
}

#[test]
fn jc_reads_every_row_of_udp() {
    check_jc(&["-a", "-p", "udp"], false);
}

#[test]
fn jc_reads_every_row_of_anot() {
    let text = ours(&["-anot"]);
    let parsed = jc(&text);
    let want = truth(&["-anot"]);
    assert_eq!(parsed.len(), rows(&text).len(), "{text}");
    for (p, (pid, _, _)) in parsed.iter().zip(&want) {
        assert_eq!(p["pid"].as_u64(), Some(*pid), "{p}");
        if p["proto"] == "TCP" {
            assert_eq!(p["offload"], "InHost", "{p}");
        }
    }
}

/// Parse::Netstat and the split agree on every field of every row.
#[test]
fn parse_netstat_and_a_split_on_two_spaces_agree() {
    for (args, with_pid) in [(&["-an"][..], false), (&["-ano"], true), (&["-anob"], true), (&["-a", "-p", "udp"], false), (&["-a"], false)] {
        let text = ours(args);
        let (status, conns) = parse_netstat(&text);
        assert_eq!(status, 200, "Parse::Netstat rejected netstat {args:?}:\n{text}");
        let lines = rows(&text);
        assert_eq!(conns.len(), lines.len(), "Parse::Netstat on netstat {args:?}");
        for (c, line) in conns.iter().zip(&lines) {
            let s = |k: &str| c[k].as_str().map(str::to_string).or_else(|| c[k].as_u64().map(|n| n.to_string())).unwrap_or_default();
            let got = vec![s("proto").to_uppercase(), s("local_host"), s("local_port"), s("foreign_host"), s("foreign_port"), s("state"), s("pid")];
            assert_eq!(got, split_row(line, with_pid), "Parse::Netstat vs split on {line:?}");
        }
        if args == ["-anob"] {
            let execs: Vec<Option<String>> = conns.iter().map(|c| c["execs"].get(0).and_then(Value::as_str).map(String::from)).collect();
            let want: Vec<Option<String>> = truth(args).into_iter().map(|(_, e, _)| e).collect();
            assert_eq!(execs, want, "Parse::Netstat's execs");
        }
    }
}

/// `-t` with `-o`: Parse::Netstat's win32 regex ends a row at the PID, so it
/// rejects Windows' own `-oat` output (the capture) exactly as it rejects
/// ours: not a difference of ours.
#[test]
fn parse_netstat_rejects_offload_rows_as_on_windows() {
    let capture = std::fs::read_to_string(fixtures().join("windows/winsrv2019-netstat-oat.htb-flight.txt")).unwrap();
    assert_eq!(parse_netstat(&capture).0, 400);
    assert_eq!(parse_netstat(&ours(&["-anot"])).0, 400);
}
