//! The layout of -e, -s, -s -p tcp and -r held against real Windows
//! captures (tests/fixtures/windows/, sources in SOURCES-info.md): the same
//! lines in the same order, blank lines where Windows has them, and every
//! field starting or ending at Windows' column. Values differ (the fixture
//! tree is not that machine), so lines are compared by their shape.
mod fixture;

use std::path::PathBuf;

fn fixtures() -> PathBuf {
    fixture::fixtures()
}

fn capture(name: &str) -> String {
    let p = fixtures().join("windows").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).replace("\r\n", "\n")
}

fn netstat(args: &[&str]) -> String {
    fixture::ok("basic", args)
}

/// (start, end) columns of each whitespace-separated word, 1-based.
fn words(line: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (c == ' ', start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s + 1, i, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// A -s line by what a parser relies on: a `Name = value` row as the name
/// and the column of its `=`; a `Name  Received  Sent` row as the name and
/// where each number starts; anything else (titles, headers) as text with
/// each word's start column.
fn stat_shape(line: &str) -> String {
    if line.trim().is_empty() {
        return String::new();
    }
    if let Some(eq) = line.find(" = ") {
        return format!("{} ={}", line[..eq].trim(), eq + 2);
    }
    let w = words(line);
    let name: Vec<&str> = w.iter().take_while(|(_, _, t)| !is_number(t)).map(|(_, _, t)| *t).collect();
    let nums: Vec<String> = w.iter().filter(|(_, _, t)| is_number(t)).map(|(s, _, _)| format!("@{s}")).collect();
    if nums.is_empty() {
        return w.iter().map(|(s, _, t)| format!("{t}@{s}")).collect::<Vec<_>>().join(" ");
    }
    format!("{} {}", name.join(" "), nums.join(" "))
}

/// Our -s text without the one line Windows does not have (what Linux
/// counts for both families) and the blank line before it.
fn without_note(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let notes: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("  (")).collect();
    assert!(notes.len() <= 1, "more than one note line:\n{text}");
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    if let Some(&i) = notes.first() {
        assert!(lines[i].contains("TCP"), "the note says what TCP combines: {}", lines[i]);
        assert_eq!(lines[i - 1], "", "a blank line before the note");
        out.drain(i - 1..=i);
    }
    out
}

/// A capture cut into the runs of lines between excerpt markers (`...`,
/// `[... lines lost ...]`, a leading `(excerpt ...)` or prompt line).
fn runs(text: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for l in text.lines() {
        if l.starts_with("...") || l.starts_with("  [...") || l.starts_with("(excerpt") || l.starts_with("C:\\") {
            out.push(Vec::new());
        } else {
            out.last_mut().unwrap().push(l.to_string());
        }
    }
    out.retain(|r| r.iter().any(|l| !l.trim().is_empty()));
    out
}

/// Every run of the capture is a contiguous block of ours, in order.
fn assert_runs_in_order(capture_name: &str, ours: &[String]) {
    let ours_shape: Vec<String> = ours.iter().map(|l| stat_shape(l)).collect();
    let mut from = 0;
    for run in runs(&capture(capture_name)) {
        let want: Vec<String> = run.iter().map(|l| stat_shape(l)).collect();
        let at = (from..=ours_shape.len().saturating_sub(want.len())).find(|&i| ours_shape[i..i + want.len()] == want[..]);
        let Some(at) = at else {
            // Show the first line of the run that has no match where it should.
            let first = (from..ours_shape.len()).find(|&i| ours_shape[i] == want[0]).unwrap_or(from);
            let diff: Vec<String> = want
                .iter()
                .zip(ours_shape[first..].iter().chain(std::iter::repeat(&"<missing>".to_string())))
                .filter(|(a, b)| a != b)
                .take(5)
                .map(|(a, b)| format!("  windows {a:?}\n  ours    {b:?}"))
                .collect();
            panic!("{capture_name}: a run starting {:?} is not in our output:\n{}\n--- ours ---\n{}", run[0], diff.join("\n"), ours.join("\n"));
        };
        from = at + want.len();
    }
}

#[test]
fn statistics_match_windows_section_by_section() {
    let ours = without_note(&netstat(&["-s"]));
    assert_runs_in_order("win-netstat-s.go-testdata.txt", &ours);
    // The whole of ours is Windows' too: it starts where the capture does
    // and has the sections in its order.
    let titles: Vec<&String> = ours.iter().filter(|l| l.ends_with("Statistics") || l.contains("Statistics for")).collect();
    assert_eq!(
        titles,
        [
            "IPv4 Statistics",
            "IPv6 Statistics",
            "ICMPv4 Statistics",
            "ICMPv6 Statistics",
            "TCP Statistics for IPv4",
            "TCP Statistics for IPv6",
            "UDP Statistics for IPv4",
            "UDP Statistics for IPv6"
        ]
    );
}

#[test]
fn statistics_tcpv6_and_udp_match_windows() {
    let ours = without_note(&netstat(&["-e", "-s"]));
    assert_runs_in_order("win-netstat-s-tcp-udp.rust-testdata.txt", &ours);
}

#[test]
fn statistics_for_tcp_are_followed_by_the_tcp_connections() {
    let text = netstat(&["-s", "-p", "tcp"]);
    let ours = without_note(&text);
    let capture = capture("win-netstat-s.go-testdata.txt");
    // The capture's TCP Statistics for IPv4 block, title to its blank line.
    let lines: Vec<&str> = capture.lines().collect();
    let at = lines.iter().position(|l| *l == "TCP Statistics for IPv4").unwrap();
    let block: Vec<String> = lines[at - 1..at + 11].iter().map(|l| stat_shape(l)).collect();
    let shapes: Vec<String> = ours.iter().map(|l| stat_shape(l)).collect();
    assert_eq!(shapes[..block.len()], block[..], "{text}");
    assert_eq!(ours[block.len() - 1..block.len() + 3].join("\n"), "\nActive Connections\n\n  Proto  Local Address          Foreign Address        State", "{text}");
    let rows: Vec<&String> = ours[block.len() + 3..].iter().collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.starts_with("  TCP    ")), "{text}");
    assert!(!text.contains("UDP"), "{text}");
}

/// -e is the totals block, nothing else: every word of every line ends
/// where Windows' does (numbers are right-aligned), in both captures.
#[test]
fn ethernet_is_the_totals_block_only() {
    let ours = netstat(&["-e"]);
    for name in ["win-netstat-e.cygwin-comment.txt", "win-netstat-e.lab-report.txt"] {
        let win: Vec<String> = runs(&capture(name)).concat();
        let ours: Vec<&str> = ours.lines().collect();
        assert_eq!(ours.len(), win.len(), "{name}: line count\n{}", ours.join("\n"));
        for (w, o) in win.iter().zip(&ours) {
            let end = |l: &str| words(l).iter().map(|(_, e, t)| if is_number(t) { format!("#{e}") } else { format!("{t}{e}") }).collect::<Vec<_>>();
            assert_eq!(end(o), end(w), "{name}:\n  windows {w:?}\n  ours    {o:?}");
        }
    }
    // The classic idiom: the Bytes line is the total.
    let bytes: Vec<&str> = ours.lines().filter(|l| l.starts_with("Bytes")).collect();
    assert_eq!(bytes, ["Bytes          18446744073709551615        92760873"]);
}

/// A -r line by kind: route rows as the columns their words end (IPv4,
/// right-aligned) or start (IPv6), the rest as text.
fn route_shape(line: &str, ipv6: bool) -> String {
    let w = words(line);
    if line.starts_with('=') {
        return "RULE".into();
    }
    if w.first().is_some_and(|(_, _, t)| t.contains("...")) && line.find("...").is_some_and(|i| i <= 3) {
        return "INTERFACE".into();
    }
    let numeric = |t: &str| t.contains('.') || t.contains(':') || is_number(t);
    if w.len() >= 2 && w.iter().all(|(_, _, t)| numeric(t) || *t == "On-link") {
        if ipv6 {
            return match w.len() {
                1 | 2 if w[0].0 == 37 => "ROW6 gateway@37 (wrapped)".into(),
                3 => format!("ROW6 if#{} metric#{} dest@{} (wraps)", w[0].1, w[1].1, w[2].0),
                _ => format!("ROW6 if#{} metric#{} dest@{} gateway@{}", w[0].1, w[1].1, w[2].0, w[3].0),
            };
        }
        let ends: Vec<String> = w.iter().map(|(_, e, _)| e.to_string()).collect();
        return format!("ROW{} ends {}", w.len(), ends.join(","));
    }
    if w.len() == 1 && w[0].0 == 37 {
        return "ROW6 gateway@37 (wrapped)".into();
    }
    line.trim_end().to_string()
}

fn route_skeleton(text: &str) -> Vec<String> {
    let mut ipv6 = false;
    let mut out: Vec<String> = Vec::new();
    for l in text.lines() {
        ipv6 |= l == "IPv6 Route Table";
        let s = route_shape(l, ipv6);
        // Row lines repeat; the sequence of kinds is what must match.
        if (s == "INTERFACE" || s.starts_with("ROW")) && out.iter().rev().take(3).any(|p| *p == s) {
            continue;
        }
        out.push(s);
    }
    out
}

#[test]
fn routes_match_windows_route_print() {
    let ours = netstat(&["-r"]);
    let win = capture("win-route-print.msdocs-storsimple.txt");
    let mut want = route_skeleton(&win);
    // The capture has one IPv4 persistent route; Linux has none, which
    // Windows prints as its IPv6 section does: the heading and `  None`.
    let p = want.iter().position(|l| l == "Persistent Routes:").unwrap();
    assert!(want[p + 1].starts_with("  Network Address") && want[p + 2].starts_with("ROW4") && want[p + 3] == "RULE", "{want:?}");
    want.splice(p + 1..p + 4, ["  None".to_string()]);
    let got = route_skeleton(&ours);
    assert_eq!(got, want, "--- ours ---\n{ours}");
    // The Interface column is an address, never an interface name, and the
    // local table's routes are there: each address, 127/8, the broadcasts.
    for dest in ["10.0.0.5", "10.0.0.255", "127.0.0.0", "127.0.0.1", "127.255.255.255", "172.17.255.255"] {
        assert!(ours.lines().any(|l| l.split_whitespace().next() == Some(dest)), "no route to {dest}:\n{ours}");
    }
    let v4: Vec<&str> = ours.lines().filter(|l| l.split_whitespace().next().is_some_and(|d| d.parse::<std::net::Ipv4Addr>().is_ok())).collect();
    assert!(v4.len() >= 10 && v4.iter().all(|l| l.split_whitespace().nth(3).is_some_and(|i| i.parse::<std::net::Ipv4Addr>().is_ok())), "{ours}");
}
