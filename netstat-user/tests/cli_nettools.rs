//! Linux muscle memory through the real binary: a net-tools invocation
//! that is not valid here gets exactly one stderr line naming the
//! equivalent, nothing on stdout, exit 2; one that is valid in both runs as
//! Windows netstat would, with no hint.
mod fixture;
use std::process::Command;

/// The bare command line, as a user types it.
fn bare(args: &[&str]) -> (String, String, Option<i32>) {
    let o = Command::new(env!("CARGO_BIN_EXE_netstat")).args(args).output().unwrap();
    (String::from_utf8(o.stdout).unwrap(), String::from_utf8(o.stderr).unwrap(), o.status.code())
}

/// Against the fixture tree, for what runs.
fn netstat(args: &[&str]) -> (String, String, Option<i32>) {
    let (out, err, code) = fixture::run("basic", args);
    (out, err, Some(code))
}

#[test]
fn each_net_tools_idiom_gets_one_line_naming_ours() {
    for (args, ours) in [
        (&["-tulpn"][..], "netstat -n -o --listening"),
        (&["-tlnp"], "netstat -n -o --listening --tcp"),
        (&["-antp"], "netstat -a -n -o --tcp"),
        (&["-plant"], "netstat -a -n -o --tcp"),
        (&["-i"], "netstat -e"),
        (&["-p", "1234"], "netstat -o --pid 1234"),
        (&["-l"], "netstat --listening"),
        (&["-u"], "netstat --udp"),
        (&["-c"], "netstat 1"),
        (&["-W"], "netstat"),
        (&["-su"], "netstat -s -p udp"),
        (&["-x"], "no equivalent (-x: Unix sockets are not listed here, try ss -x)"),
        (&["-g"], "no equivalent (-g: multicast memberships are not listed here, try ip maddr)"),
        (&["-tulpne"], "netstat -n -o --listening (-e: the user and inode are in --json)"),
        (&["--tcp", "--listening", "--program"], "netstat -o --listening --tcp"),
    ] {
        let (out, err, code) = bare(args);
        assert_eq!(code, Some(2), "netstat {args:?}: {err}");
        assert!(out.is_empty(), "netstat {args:?} printed {out}");
        assert_eq!(err, format!("netstat: {} is net-tools syntax; here: {ours}\n", args.join(" ")), "netstat {args:?}");
    }
}

#[test]
fn the_equivalents_named_run_here() {
    for args in [&["-n", "-o", "--listening"][..], &["-a", "-n", "-o", "--tcp"], &["-e"], &["-o", "--pid", "1234"], &["-s", "-p", "udp"]] {
        let (out, err, code) = netstat(args);
        assert_eq!(code, Some(0), "netstat {args:?}: {err}");
        assert!(err.is_empty() && !out.is_empty(), "netstat {args:?}: {err}");
    }
}

/// Valid in both, meaning something else here (-t is the offload state,
/// -o the PID, -e interface statistics): runs as Windows would, no hint.
#[test]
fn valid_here_runs_as_windows_would() {
    for (args, shows) in [
        (&["-ant"][..], "Offload State"),
        (&["-r", "-n"], "IPv4 Route Table"),
        (&["-rn"], "IPv4 Route Table"),
        (&["-e"], "Bytes"),
        (&["-ao"], "PID"),
        (&["-s"], "TCP Statistics"),
    ] {
        let (out, err, code) = netstat(args);
        assert_eq!(code, Some(0), "netstat {args:?}: {err}");
        assert!(err.is_empty(), "netstat {args:?} wrote {err}");
        assert!(out.contains(shows), "netstat {args:?} lacks {shows:?}: {out}");
    }
}

#[test]
fn what_is_neither_keeps_our_error() {
    let (_, err, code) = netstat(&["-p", "sctp"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("-o (PID) or -b (executable)") && !err.contains("net-tools"), "{err}");
    let (_, err, _) = netstat(&["-t", "--bogus"]);
    assert!(err.contains("--bogus") && !err.contains("net-tools"), "{err}");
}
