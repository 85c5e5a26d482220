//! Bad input: exactly one line on stderr, nothing on stdout, exit code 2.
use std::process::Command;

fn bad(args: &[&str], mention: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_netstat")).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "netstat {args:?}: exit {:?}, stderr {err}", o.status);
    assert!(o.stdout.is_empty(), "netstat {args:?} printed to stdout");
    assert_eq!(err.lines().count(), 1, "netstat {args:?}: not one line: {err:?}");
    assert!(err.ends_with('\n') && err.starts_with("netstat: "), "{err:?}");
    assert!(err.contains(mention), "netstat {args:?}: {err:?} does not mention {mention:?}");
}

#[test]
fn unknown_flags() {
    bad(&["--bogus"], "--bogus");
    bad(&["-Z"], "-Z");
}

#[test]
fn bad_protocol_says_what_p_means_here() {
    bad(&["-p", "sctp"], "-o (PID) or -b (executable)");
    bad(&["-p", "icmp"], "with -s");
    bad(&["-s", "-p", "\x1b[31mx"], "\\x1b[31mx");
    bad(&["-p"], "-p");
}

#[test]
fn bad_intervals() {
    bad(&["abc"], "INTERVAL");
    bad(&["0"], "INTERVAL");
    bad(&["1.5"], "INTERVAL");
    bad(&["99999999999999999999999"], "INTERVAL");
    bad(&["5", "6"], "6");
}

#[test]
fn help_is_not_an_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_netstat")).arg("-h").output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    for flag in ["--all", "--numeric", "--fqdn", "--owner", "--executable", "--proto", "--route", "--statistics", "--ethernet", "--offload", "--tcp", "--udp", "--listening", "--json", "INTERVAL"] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}
