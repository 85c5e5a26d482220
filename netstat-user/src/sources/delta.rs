//! --delta: how the -e and -s counters changed between two displays, and
//! the share of errors and discards among the packets of that interval.
//! Pure arithmetic on two readings; printing is `render::info`'s job.
use serde::Serialize;

use super::info::{Rows, Section};
use crate::sources::proc::dev::DevCounters;

/// One -e row as numbers: (name, received, sent).
pub type DevRow = (&'static str, Option<i128>, Option<i128>);
/// -e's rows, in print order.
pub type DevRows = Vec<DevRow>;

pub fn dev_rows(d: &DevCounters) -> DevRows {
    let n = |v: u64| Some(i128::from(v));
    vec![
        ("Bytes", n(d.rx_bytes), n(d.tx_bytes)),
        ("Unicast packets", n(d.rx_packets.saturating_sub(d.rx_multicast)), n(d.tx_packets.saturating_sub(d.tx_nonunicast.unwrap_or(0)))),
        ("Non-unicast packets", n(d.rx_multicast), d.tx_nonunicast.and_then(n)),
        ("Discards", n(d.rx_dropped), n(d.tx_dropped)),
        ("Errors", n(d.rx_errors), n(d.tx_errors)),
        ("Unknown protocols", d.rx_nohandler.and_then(n), None),
    ]
}

fn sub(now: Option<i128>, before: Option<i128>) -> Option<i128> {
    Some(now? - before?)
}

/// Row by row; a row missing from either reading has no change.
pub fn dev_delta(now: &DevRows, before: &DevRows) -> DevRows {
    now.iter()
        .map(|(name, r, s)| {
            let b = before.iter().find(|(n, _, _)| n == name);
            (*name, sub(*r, b.and_then(|b| b.1)), sub(*s, b.and_then(|b| b.2)))
        })
        .collect()
}

/// Each section's change, in the same shape; counters absent before are
/// left out.
pub fn sections_delta(now: &[Section], before: &[Section]) -> Vec<Section> {
    now.iter()
        .map(|s| {
            let b = before.iter().find(|b| b.title == s.title).map(|b| &b.rows);
            let rows = match (&s.rows, b) {
                (Rows::Single(rows), Some(Rows::Single(b))) => Rows::Single(
                    rows.iter().filter_map(|(n, v)| b.iter().find(|(m, _)| m == n).map(|(_, w)| (*n, v - w))).collect(),
                ),
                (Rows::InOut(rows), Some(Rows::InOut(b))) => Rows::InOut(
                    rows.iter()
                        .filter_map(|(n, r, t)| b.iter().find(|(m, _, _)| m == n).map(|(_, br, bt)| (*n, sub(*r, *br), sub(*t, *bt))))
                        .collect(),
                ),
                (Rows::Single(_), _) => Rows::Single(Vec::new()),
                (Rows::InOut(_), _) => Rows::InOut(Vec::new()),
            };
            Section { title: s.title, rows, note: None }
        })
        .collect()
}

/// Errors and discards among the packets of one direction in the interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub packets: i128,
    pub errors: Option<i128>,
    pub discards: Option<i128>,
}

impl Share {
    /// A count as a fraction of `packets`; None when no packet passed.
    pub fn fraction(&self, n: Option<i128>) -> Option<f64> {
        (self.packets > 0).then(|| n.map(|n| n as f64 / self.packets as f64)).flatten()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorShare {
    pub section: &'static str,
    pub received: Option<Share>,
    pub sent: Option<Share>,
}

pub const INTERFACES: &str = "Interface Statistics";

/// -e's interval: packets are unicast plus non-unicast.
pub fn dev_share(d: &DevRows) -> ErrorShare {
    let get = |name: &str| d.iter().find(|(n, _, _)| *n == name).copied();
    let dir = |pick: fn(&DevRow) -> Option<i128>| {
        let packets = get("Unicast packets").and_then(|r| pick(&r))?
            + get("Non-unicast packets").and_then(|r| pick(&r)).unwrap_or(0);
        Some(Share { packets, errors: get("Errors").and_then(|r| pick(&r)), discards: get("Discards").and_then(|r| pick(&r)) })
    };
    ErrorShare { section: INTERFACES, received: dir(|r| r.1), sent: dir(|r| r.2) }
}

/// The -s sections' intervals, where the section has error counters.
/// IP: header and address errors, and discards, of the packets received;
/// no-route errors and discards of the output requests. ICMP: Errors of
/// Messages. UDP: Receive Errors and No Ports (datagrams no socket took)
/// of all datagrams that arrived (delivered + no port + errors). TCP's
/// netstat counters have no error or discard figure.
pub fn sections_share(delta: &[Section]) -> Vec<ErrorShare> {
    let mut out = Vec::new();
    for s in delta {
        let share = match &s.rows {
            Rows::Single(rows) => {
                let get = |n: &str| rows.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
                let add = |a: Option<i128>, b: Option<i128>| match (a, b) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
                };
                if s.title.starts_with("IPv") {
                    Some((
                        get("Packets Received").map(|packets| Share {
                            packets,
                            errors: add(get("Received Header Errors"), get("Received Address Errors")),
                            discards: get("Received Packets Discarded"),
                        }),
                        get("Output Requests").map(|packets| Share {
                            packets,
                            errors: get("Output Packet No Route"),
                            discards: get("Discarded Output Packets"),
                        }),
                    ))
                } else if s.title.starts_with("UDP ") {
                    let arrived = add(add(get("Datagrams Received"), get("No Ports")), get("Receive Errors"));
                    Some((arrived.map(|packets| Share { packets, errors: get("Receive Errors"), discards: get("No Ports") }), None))
                } else {
                    None
                }
            }
            Rows::InOut(rows) => {
                let get = |n: &str| rows.iter().find(|(m, _, _)| *m == n).copied();
                let (m, e) = (get("Messages"), get("Errors"));
                Some((
                    m.and_then(|m| m.1).map(|packets| Share { packets, errors: e.and_then(|e| e.1), discards: None }),
                    m.and_then(|m| m.2).map(|packets| Share { packets, errors: e.and_then(|e| e.2), discards: None }),
                ))
            }
        };
        if let Some((received, sent)) = share
            && (received.is_some() || sent.is_some())
        {
            out.push(ErrorShare { section: s.title, received, sent });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_share_counts_every_datagram_that_arrived() {
        let before = vec![Section {
            title: "UDP Statistics for IPv4",
            rows: Rows::Single(vec![("Datagrams Received", 10), ("No Ports", 1), ("Receive Errors", 0), ("Datagrams Sent", 5)]),
            note: None,
        }];
        let mut now = before.clone();
        now[0].rows = Rows::Single(vec![("Datagrams Received", 16), ("No Ports", 4), ("Receive Errors", 1), ("Datagrams Sent", 9)]);
        let d = sections_delta(&now, &before);
        assert_eq!(d[0].rows, Rows::Single(vec![("Datagrams Received", 6), ("No Ports", 3), ("Receive Errors", 1), ("Datagrams Sent", 4)]));
        let s = sections_share(&d);
        let r = s[0].received.as_ref().unwrap();
        assert_eq!((r.packets, r.errors, r.discards), (10, Some(1), Some(3)));
        assert_eq!(r.fraction(r.discards), Some(0.3));
        assert!(s[0].sent.is_none());
        let idle = Share { packets: 0, errors: Some(0), discards: None };
        assert_eq!(idle.fraction(idle.errors), None);
    }
}
