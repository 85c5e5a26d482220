//! Interface counters: /proc/net/dev, plus what only sysfs has
//! (rx_nohandler, the kernel's "no protocol handler" drops).
use std::path::Path;

use super::{ProcError, read_to_string};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DevCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub rx_multicast: u64,
    /// None when sysfs does not show the interface.
    pub rx_nohandler: Option<u64>,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
    /// Multicast and broadcast packets sent. The kernel counts these per
    /// host (IP level), not per interface: set on the total only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_nonunicast: Option<u64>,
}

pub fn read(proc_root: &Path, sys_root: &Path) -> Result<Vec<DevCounters>, ProcError> {
    let text = read_to_string(&proc_root.join("net/dev"))?;
    let mut out = parse(&text);
    for d in &mut out {
        d.rx_nohandler = super::links::read_sys_attr(sys_root, &d.name, "statistics/rx_nohandler")
            .and_then(|s| s.parse().ok());
    }
    Ok(out)
}

pub fn parse(text: &str) -> Vec<DevCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
            if v.len() < 16 {
                return None;
            }
            Some(DevCounters {
                name: name.trim().to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                rx_multicast: v[7],
                rx_nohandler: None,
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
                tx_nonunicast: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_bad_lines() {
        let t = "Inter-|   Receive |  Transmit\n face |bytes ...\n    lo: 91806585 1706790    0 1265    0     0          0         0 91806585 1706790    0    0    0     0       0          0\n  eth0: 1 2 3\n  big: 18446744073709551615 1 0 0 0 0 0 1 0 0 0 0 0 0 0 0\n";
        let d = parse(t);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "lo");
        assert_eq!(d[0].rx_dropped, 1265);
        assert_eq!(d[1].rx_bytes, u64::MAX);
        assert_eq!(d[1].rx_multicast, 1);
    }
}
