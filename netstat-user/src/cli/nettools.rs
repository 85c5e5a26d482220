//! Linux muscle memory: an invocation that is net-tools `netstat` syntax but
//! not valid here (`-tulpn`, `-i`, `-p 1234`) is answered with one line
//! naming what says the same here. Consulted only after our own parse
//! failed: anything valid here (`-an`, `-ant`, `-rn`, `-s`, `-e`) runs as
//! Windows netstat would, with no hint. Knows the two option sets only.

/// What a net-tools option becomes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Here {
    /// These arguments.
    Args(&'static [&'static str]),
    /// Nothing to add: what it changes there is how it is here already.
    Same,
    /// Not shown here; the note says where to look.
    Missing(&'static str),
}

/// One net-tools option: its letter (if any), long name, and its meaning here.
#[derive(Debug, Clone, Copy)]
pub struct Idiom {
    pub short: Option<char>,
    pub long: &'static str,
    pub here: Here,
}

const fn idiom(short: char, long: &'static str, here: Here) -> Idiom {
    Idiom { short: Some(short), long, here }
}

/// net-tools 2.10 `netstat` options (`netstat --help`) and their
/// equivalents. `-t`/`-u` with `-s`, `-p` before a number, `-a` with `-l`
/// and `-c`'s interval are combined in `Equivalent::args`.
pub static IDIOMS: &[Idiom] = &[
    idiom('a', "all", Here::Args(&["-a"])),
    idiom('t', "tcp", Here::Args(&["--tcp"])),
    idiom('u', "udp", Here::Args(&["--udp"])),
    idiom('l', "listening", Here::Args(&["--listening"])),
    idiom('n', "numeric", Here::Args(&["-n"])),
    idiom('p', "program", Here::Args(&["-o"])),
    idiom('e', "extend", Here::Missing("the user and inode are in --json")),
    idiom('o', "timers", Here::Missing("timers are not shown, try ss -o")),
    idiom('c', "continuous", Here::Args(&["1"])),
    idiom('i', "interfaces", Here::Args(&["-e"])),
    idiom('r', "route", Here::Args(&["-r"])),
    idiom('C', "cache", Here::Args(&["-r"])),
    idiom('F', "fib", Here::Args(&["-r"])),
    idiom('s', "statistics", Here::Args(&["-s"])),
    idiom('4', "inet", Here::Args(&["-4"])),
    idiom('6', "inet6", Here::Args(&["-6"])),
    idiom('v', "verbose", Here::Same),
    idiom('W', "wide", Here::Same),
    idiom('N', "symbolic", Here::Same),
    idiom('T', "notrim", Here::Same),
    idiom('w', "raw", Here::Missing("raw sockets are not listed here, try ss -w")),
    idiom('x', "unix", Here::Missing("Unix sockets are not listed here, try ss -x")),
    idiom('g', "groups", Here::Missing("multicast memberships are not listed here, try ip maddr")),
    idiom('M', "masquerade", Here::Missing("masqueraded connections are not listed here, try conntrack -L")),
    idiom('Z', "context", Here::Missing("SELinux contexts are not shown here")),
    Idiom { short: None, long: "numeric-hosts", here: Here::Args(&["-n"]) },
    Idiom { short: None, long: "numeric-ports", here: Here::Args(&["-n"]) },
    Idiom { short: None, long: "numeric-users", here: Here::Same },
    Idiom { short: None, long: "ip", here: Here::Args(&["-4"]) },
];

/// `-A FAMILY` / `--protocol=FAMILY`.
fn family(name: &str) -> Option<Here> {
    Some(match name {
        "inet" | "ip" => Here::Args(&["-4"]),
        "inet6" | "ip6" => Here::Args(&["-6"]),
        "unix" | "local" => Here::Missing("Unix sockets are not listed here, try ss -x"),
        "ax25" | "netrom" | "rose" | "ipx" | "ddp" | "x25" | "econet" | "ash" | "bluetooth" | "appletalk" => {
            Here::Missing("only TCP and UDP over IPv4 and IPv6 are listed here")
        }
        _ => return None,
    })
}

fn by_short(c: char) -> Option<&'static Idiom> {
    IDIOMS.iter().find(|i| i.short == Some(c))
}

fn by_long(name: &str) -> Option<&'static Idiom> {
    IDIOMS.iter().find(|i| i.long == name)
}

/// A net-tools command line read as net-tools reads it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reading {
    /// (what the user typed for it, its meaning here), in order.
    options: Vec<(String, Here)>,
    /// `-p` followed by a number: a PID was meant.
    pid: Option<u32>,
    /// A trailing number: net-tools' delay (an INTERVAL here).
    delay: Option<u64>,
}

/// Read `args` (without the program name) as net-tools `netstat` syntax;
/// None when it is not (then our own error stands).
fn read(args: &[String]) -> Option<Reading> {
    let mut r = Reading::default();
    let mut i = 0;
    let mut after_p = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if let Some(long) = a.strip_prefix("--") {
            after_p = false;
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            if name == "protocol" {
                let v = match value {
                    Some(v) => v.to_string(),
                    None => {
                        i += 1;
                        args.get(i - 1)?.clone()
                    }
                };
                r.options.push((format!("--protocol={v}"), family(&v)?));
                continue;
            }
            if value.is_some() {
                return None;
            }
            let idiom = by_long(name)?;
            after_p = name == "program";
            r.options.push((format!("--{name}"), idiom.here));
        } else if let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) {
            after_p = false;
            let mut chars = cluster.char_indices();
            while let Some((at, c)) = chars.next() {
                if c == 'A' {
                    // -A FAMILY or -AFAMILY
                    let rest = &cluster[at + 1..];
                    let v = if rest.is_empty() {
                        i += 1;
                        args.get(i - 1)?.clone()
                    } else {
                        rest.to_string()
                    };
                    r.options.push((format!("-A {v}"), family(&v)?));
                    break;
                }
                if c == 'p' && cluster[at + 1..].bytes().all(|b| b.is_ascii_digit()) && at + 1 < cluster.len() {
                    // -p1234: a PID glued to -p.
                    r.options.push(("-p".into(), by_short('p')?.here));
                    r.pid = Some(cluster[at + 1..].parse().ok()?);
                    break;
                }
                let idiom = by_short(c)?;
                r.options.push((format!("-{c}"), idiom.here));
                after_p = c == 'p';
            }
        } else if a.bytes().all(|b| b.is_ascii_digit()) && !a.is_empty() {
            if after_p && r.pid.is_none() {
                r.pid = Some(a.parse().ok()?);
            } else if r.delay.is_none() && i == args.len() {
                r.delay = Some(a.parse().ok().filter(|&d| d > 0)?);
            } else {
                return None;
            }
            after_p = false;
        } else {
            return None;
        }
    }
    (!r.options.is_empty()).then_some(r)
}

impl Reading {
    /// Our arguments for the same request, in one order whatever the
    /// user's, each once.
    fn args(&self) -> Vec<String> {
        let has = |a: &str| self.options.iter().any(|(_, h)| matches!(h, Here::Args(x) if x.contains(&a)));
        let (tcp, udp, stats) = (has("--tcp"), has("--udp"), has("-s"));
        let mut out: Vec<String> = Vec::new();
        let mut push = |a: &str| {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        };
        for a in ["-a", "-n", "-o", "-e", "-r", "-s", "-4", "-6"] {
            if has(a) {
                push(a);
            }
        }
        // net-tools' -a wins over -l (-plant lists everything).
        if has("--listening") && !has("-a") {
            push("--listening");
        }
        // Both, or neither, is what we list anyway; with -s, -p narrows.
        match (tcp, udp, stats) {
            (true, false, false) => push("--tcp"),
            (false, true, false) => push("--udp"),
            (true, false, true) => {
                push("-p");
                push("tcp");
            }
            (false, true, true) => {
                push("-p");
                push("udp");
            }
            _ => {}
        }
        if let Some(p) = self.pid {
            push("--pid");
            out.push(p.to_string());
        }
        if let Some(d) = self.delay {
            out.push(d.to_string());
        } else if has("1") {
            out.push("1".into());
        }
        out
    }

    /// What has no equivalent, once per note: `-x: Unix sockets ...`.
    fn notes(&self) -> Vec<String> {
        let mut notes: Vec<(String, &str)> = Vec::new();
        for (typed, h) in &self.options {
            if let Here::Missing(why) = h {
                if !notes.iter().any(|(_, w)| w == why) {
                    notes.push((typed.clone(), why));
                }
            }
        }
        notes.into_iter().map(|(t, w)| format!("{t}: {w}")).collect()
    }
}

/// The one-line answer for a net-tools invocation (without the `netstat: `
/// prefix), or None when `args` (argv without the program name) is not
/// net-tools syntax.
pub fn hint(args: &[String]) -> Option<String> {
    let r = read(args)?;
    let ours = r.args();
    let notes = r.notes();
    let here = if ours.is_empty() && !notes.is_empty() { "no equivalent".to_string() } else { format!("netstat {}", ours.join(" ")) };
    let here = here.trim_end();
    let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
    Some(format!("{} is net-tools syntax; here: {here}{notes}", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(args: &str) -> Option<String> {
        hint(&args.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    fn here(args: &str) -> String {
        let line = h(args).unwrap_or_else(|| panic!("{args}: no hint"));
        line.split_once("; here: ").unwrap().1.to_string()
    }

    #[test]
    fn the_common_idioms() {
        assert_eq!(here("-tulpn"), "netstat -n -o --listening");
        assert_eq!(here("-tunlp"), "netstat -n -o --listening");
        assert_eq!(here("-tlnp"), "netstat -n -o --listening --tcp");
        assert_eq!(here("-antp"), "netstat -a -n -o --tcp");
        assert_eq!(here("-plant"), "netstat -a -n -o --tcp");
        assert_eq!(here("-lntu"), "netstat -n --listening");
        assert_eq!(here("-i"), "netstat -e");
        assert_eq!(here("-p 1234"), "netstat -o --pid 1234");
        assert_eq!(here("-p1234"), "netstat -o --pid 1234");
        assert_eq!(here("-tp 1234"), "netstat -o --tcp --pid 1234");
        assert_eq!(here("-l"), "netstat --listening");
        assert_eq!(here("-u"), "netstat --udp");
        assert_eq!(here("-c"), "netstat 1");
        assert_eq!(here("-tnc"), "netstat -n --tcp 1");
        assert_eq!(here("-tulpn 5"), "netstat -n -o --listening 5");
        assert_eq!(here("-su"), "netstat -s -p udp");
        assert_eq!(here("-st -u"), "netstat -s");
        assert_eq!(here("-W"), "netstat");
        assert_eq!(here("--tcp --listening --numeric --program"), "netstat -n -o --listening --tcp");
        assert_eq!(here("-A inet6 -l"), "netstat -6 --listening");
        assert_eq!(here("--protocol=inet --listening -W"), "netstat -4 --listening");
        assert_eq!(here("-rC"), "netstat -r");
    }

    #[test]
    fn what_has_no_equivalent_is_said_once() {
        assert_eq!(here("-x"), "no equivalent (-x: Unix sockets are not listed here, try ss -x)");
        assert_eq!(here("-g"), "no equivalent (-g: multicast memberships are not listed here, try ip maddr)");
        assert_eq!(here("-A unix --unix"), "no equivalent (-A unix: Unix sockets are not listed here, try ss -x)");
        assert_eq!(here("-tulpne"), "netstat -n -o --listening (-e: the user and inode are in --json)");
        assert_eq!(here("-tnpo"), "netstat -n -o --tcp (-o: timers are not shown, try ss -o)");
        assert_eq!(h("-tulpn").unwrap(), "-tulpn is net-tools syntax; here: netstat -n -o --listening");
    }

    #[test]
    fn what_is_not_net_tools_gets_no_hint() {
        for args in ["", "-Q", "--bogus", "-t --stream", "-p tcp -l", "foo", "-A klingon", "5 6", "-p 1 2 3", "-c 0", "--all=1"] {
            assert_eq!(h(args), None, "{args:?}");
        }
    }

    #[test]
    fn every_letter_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for i in IDIOMS {
            assert!(i.short.is_none_or(|c| seen.insert(c)), "{:?} twice", i.short);
            assert!(by_long(i.long).is_some_and(|j| std::ptr::eq(i, j)), "--{} twice", i.long);
        }
    }

    /// Every equivalent we name is valid here and asks for what was meant.
    #[test]
    fn every_equivalent_parses_here() {
        use crate::cli::{Cli, config::Mode};
        for args in ["-tulpn", "-antp", "-plant", "-i", "-p 1234", "-su", "-tnc", "-A inet6 -l", "-rC", "-tulpne 3"] {
            let ours = here(args);
            let ours = ours.split(" (").next().unwrap();
            let argv: Vec<&str> = ours.split_whitespace().collect();
            let cfg = Cli::parse_args(argv.clone()).unwrap().unwrap().into_config().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            match args {
                "-tulpn" => assert!(cfg.listening_only && cfg.numeric && cfg.owner && cfg.proto.tcp && cfg.proto.udp),
                "-antp" | "-plant" => assert!(cfg.all && !cfg.listening_only && !cfg.proto.udp && cfg.owner),
                "-i" => assert!(matches!(cfg.mode, Mode::Info { ethernet: true, .. })),
                "-p 1234" => assert_eq!(cfg.pid, Some(1234)),
                "-tnc" => assert_eq!(cfg.interval, Some(1)),
                _ => {}
            }
        }
    }
}
