//! Protocol counters: /proc/net/snmp and /proc/net/netstat (pairs of
//! "Group: names" / "Group: values" lines) and /proc/net/snmp6 ("Name value").
//! Values are kept as i128: the kernel prints some as -1 (Tcp MaxConn) and a
//! u64 counter must never be truncated.
use std::{collections::HashMap, path::Path};

use super::{ProcError, read_to_string};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// "Ip" → "InReceives" → value; snmp6 counters live under group "".
    groups: HashMap<String, HashMap<String, i128>>,
}

impl Counters {
    pub fn get(&self, group: &str, name: &str) -> Option<i128> {
        self.groups.get(group).and_then(|g| g.get(name)).copied()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// snmp / netstat format. A values line without its names line, or with a
    /// different count, is skipped; values that are not integers are left out.
    pub fn parse_paired(&mut self, text: &str) {
        let mut names: Option<(&str, Vec<&str>)> = None;
        for line in text.lines() {
            let Some((group, rest)) = line.split_once(':') else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            match names.take() {
                Some((g, n)) if g == group && n.len() == fields.len() => {
                    let entry = self.groups.entry(group.to_string()).or_default();
                    for (k, v) in n.iter().zip(fields) {
                        if let Ok(v) = v.parse() {
                            entry.insert((*k).to_string(), v);
                        }
                    }
                }
                _ => names = Some((group, fields)),
            }
        }
    }

    pub fn parse_flat(&mut self, text: &str) {
        let entry = self.groups.entry(String::new()).or_default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            if let (Some(k), Some(v), None) = (f.next(), f.next(), f.next())
                && let Ok(v) = v.parse()
            {
                entry.insert(k.to_string(), v);
            }
        }
    }
}

/// All three files; a missing file (IPv6 disabled) leaves its groups absent.
pub fn read(proc_root: &Path) -> Result<Counters, ProcError> {
    let mut c = Counters::default();
    for (file, flat) in [("snmp", false), ("netstat", false), ("snmp6", true)] {
        match read_to_string(&proc_root.join("net").join(file)) {
            Ok(t) if flat => c.parse_flat(&t),
            Ok(t) => c.parse_paired(&t),
            Err(ProcError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_groups_negative_and_huge_values() {
        let mut c = Counters::default();
        c.parse_paired(
            "Tcp: RtoAlgorithm MaxConn ActiveOpens InSegs\nTcp: 1 -1 99999999999999999999 3402823669209384634633746074317682114550\nUdp: InDatagrams\nIcmpMsg: InType3\nIcmpMsg: 7\n",
        );
        assert_eq!(c.get("Tcp", "MaxConn"), Some(-1));
        assert_eq!(c.get("Tcp", "ActiveOpens"), Some(99_999_999_999_999_999_999));
        assert_eq!(c.get("Tcp", "InSegs"), None);
        assert_eq!(c.get("Udp", "InDatagrams"), None);
        assert_eq!(c.get("IcmpMsg", "InType3"), Some(7));
        c.parse_flat("Ip6InReceives                   \t679\nbroken\nUdp6InErrors 1 2\n");
        assert_eq!(c.get("", "Ip6InReceives"), Some(679));
        assert_eq!(c.get("", "Udp6InErrors"), None);
    }
}
