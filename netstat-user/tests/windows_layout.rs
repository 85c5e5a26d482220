//! Our connection table against real Windows captures
//! (tests/fixtures/windows/, sources in its SOURCES.md): the same preamble
//! and header, the blank line under the -t header, the same column starts,
//! fields at least two spaces (or a TAB) apart, numeric PID cells, and the
//! -b lines Windows writes (none under a TIME_WAIT row). Our side runs on the
//! basic fixture tree, names from its etc/ (no DNS).
mod fixture;

use std::{collections::BTreeSet, path::PathBuf};

fn fixtures() -> PathBuf {
    fixture::fixtures()
}

fn ours(args: &[&str]) -> String {
    fixture::ok("basic", args)
}

/// A capture's lines from the blank line before `Active Connections` on,
/// CR dropped (the Linux LF line end is right).
fn capture(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("windows").join(file)).unwrap();
    let lines: Vec<String> = text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
    let at = lines.iter().position(|l| l == "Active Connections").expect("Active Connections");
    lines[at - 1..].iter().take_while(|l| !l.starts_with("PS ") && !l.starts_with("C:\\")).cloned().collect()
}

fn is_row(l: &str) -> bool {
    l.starts_with("  TCP ") || l.starts_with("  UDP ")
}

/// Fields split where Windows separates them: two or more spaces, or a TAB.
fn fields(l: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let b = l.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'\t' && !(b[i] == b' ' && b.get(i + 1) == Some(&b' ')) && !(b[i] == b' ' && i + 1 == b.len()) {
            i += 1;
        }
        out.push((start, &l[start..i]));
    }
    out
}

/// Per protocol: the column starts of rows whose fields all fit their
/// column (shorter than 22), and the field counts of all rows.
struct Shape {
    starts: BTreeSet<(String, Vec<usize>)>,
    counts: BTreeSet<(String, usize)>,
}

fn shape(lines: &[String]) -> Shape {
    let mut s = Shape { starts: BTreeSet::new(), counts: BTreeSet::new() };
    for l in lines.iter().filter(|l| is_row(l)) {
        let f = fields(l);
        let proto = f[0].1.to_string();
        s.counts.insert((proto.clone(), f.len()));
        if f.iter().all(|(_, t)| t.chars().count() < 22) {
            s.starts.insert((proto, f.iter().map(|(c, _)| *c).collect()));
        }
    }
    s
}

fn compare(file: &str, args: &[&str], pid: bool) {
    let want = capture(file);
    let got: Vec<String> = ours(args).lines().map(str::to_string).collect();
    assert!(!got.iter().any(|l| l.contains('\r')));
    // Preamble, header and what follows the header.
    assert_eq!(got[..4], want[..4], "netstat {args:?}: preamble and header differ from {file}");
    assert_eq!(got[4].is_empty(), want[4].is_empty(), "netstat {args:?}: blank line under the header differs from {file}");
    let (w, g) = (shape(&want), shape(&got));
    for (proto, starts) in &g.starts {
        assert!(
            w.starts.iter().any(|(p, s)| p == proto && s == starts) || !w.starts.iter().any(|(p, _)| p == proto),
            "netstat {args:?}: {proto} columns start at {starts:?}, {file} at {:?}",
            w.starts
        );
    }
    // Every one of our rows splits into as many fields as Windows' rows
    // of that protocol (so a 22+ character address left two spaces).
    for (proto, n) in &g.counts {
        let theirs: Vec<usize> = w.counts.iter().filter(|(p, _)| p == proto).map(|(_, n)| *n).collect();
        assert!(theirs.is_empty() || theirs.contains(n), "netstat {args:?}: a {proto} row has {n} fields, {file}'s {theirs:?}");
    }
    assert_eq!(g.counts.iter().filter(|(p, _)| p == "TCP").count(), 1, "netstat {args:?}: TCP rows of different shapes: {:?}", g.counts);
    if pid {
        for l in got.iter().filter(|l| is_row(l)) {
            let f = fields(l);
            let cell = if f[0].1 == "TCP" { f[4].1 } else { f[3].1 };
            assert!(cell.parse::<u32>().is_ok(), "netstat {args:?}: PID cell {cell:?} is not a number in {l:?}");
        }
    }
}

#[test]
fn an_matches_windows_10() {
    compare("jc-win10-netstat-an.out", &["-an"], false);
}

#[test]
fn ano_matches_windows_10() {
    compare("jc-win10-netstat-aon.out", &["-ano"], true);
}

#[test]
fn anob_matches_windows_10() {
    compare("jc-win10-netstat-aonb.out", &["-anob"], true);
}

#[test]
fn names_match_windows_10() {
    compare("jc-win10-netstat.out", &[], false);
}

#[test]
fn nat_matches_windows_7_and_server() {
    compare("win7-netstat-nat.htb-chatterbox.txt", &["-nat"], false);
    compare("winsrv-netstat-nat.htb-mist.txt", &["-nat"], false);
}

#[test]
fn oat_matches_windows_server_2019() {
    compare("winsrv2019-netstat-oat.htb-flight.txt", &["-oat"], true);
    // Column for column: a listener's foreign address is HOSTNAME:0, the
    // PID is followed by a TAB and an offload state padded to 12.
    let text = ours(&["-oat"]);
    let row = text.lines().find(|l| l.contains("0.0.0.0:22 ")).unwrap();
    assert_eq!(row, "  TCP    0.0.0.0:22             netbox:0               LISTENING       100\tInHost      ");
    let udp = text.lines().find(|l| l.starts_with("  UDP")).unwrap();
    assert!(udp.ends_with("600\t            "), "{udp:?}");
}

/// -b: under each row ` [name]` or ` Can not obtain ownership information`
/// (leading space, as Windows), and under a TIME_WAIT row nothing, as in
/// the capture.
#[test]
fn executable_lines_are_windows_lines() {
    for lines in [capture("jc-win10-netstat-aonb.out"), ours(&["-anob"]).lines().map(str::to_string).collect()] {
        let rows: Vec<usize> = (0..lines.len()).filter(|&i| is_row(&lines[i])).collect();
        assert!(rows.iter().any(|&i| lines[i].contains("TIME_WAIT")));
        for &i in &rows {
            let next = lines.get(i + 1).map(String::as_str).unwrap_or("");
            if lines[i].contains("TIME_WAIT") {
                assert!(next.is_empty() || is_row(next), "a line under a TIME_WAIT row: {next:?}");
            }
        }
        for l in lines.iter().skip(4).filter(|l| !l.is_empty() && !is_row(l)) {
            assert!(
                (l.starts_with(" [") && l.ends_with(']'))
                    || l == " Can not obtain ownership information"
                    // Windows' service-name lines (`  RpcSs`); we have none.
                    || (l.starts_with("  ") && !l[2..].contains(' ')),
                "not a Windows -b line: {l:?}"
            );
        }
    }
}
