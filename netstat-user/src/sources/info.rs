//! The reports behind -r, -s and -e: routes and interfaces, protocol
//! statistics under netstat's counter names, interface counters. Gathers
//! from the `proc` readers; printing is `output::info`'s job.
use std::{net::Ipv4Addr, path::Path};

use serde::Serialize;

use crate::{
    cli::config::{Config, StatsProto},
    model::{Connection, Proto},
    sources::proc::{
        ProcError,
        dev::{self, DevCounters},
        links::{self, Link},
        route::{self, Route4, Route6},
        snmp::{self, Counters},
    },
};

#[derive(Debug, Serialize)]
pub struct RouteReport {
    pub interfaces: Vec<Link>,
    pub ipv4: Vec<Route4>,
    pub ipv6: Vec<Route6>,
}

pub fn routes(proc_root: &Path, sys_root: &Path) -> Result<RouteReport, ProcError> {
    let interfaces = links::read(proc_root, sys_root)?;
    let ipv4 = with_local_table(route::read_v4(proc_root)?, &route::read_local(proc_root)?);
    Ok(RouteReport { interfaces, ipv4, ipv6: route::read_v6(proc_root)? })
}

fn common_bits(a: Ipv4Addr, b: Ipv4Addr) -> u32 {
    (u32::from(a) ^ u32::from(b)).leading_zeros()
}

fn contains(net: Ipv4Addr, mask: Ipv4Addr, a: Ipv4Addr) -> bool {
    u32::from(a) & u32::from(mask) == u32::from(net) & u32::from(mask)
}

/// The main table's routes with the local table's added, and each route's
/// interface address (netstat's Interface column). fib_trie names no
/// interface, so an address belongs to the interface whose on-link main
/// route contains it (127/8 to the loopback); a route then sends from the
/// address of its interface nearest its gateway or destination, and a
/// broadcast route belongs to the local address nearest it, which is in
/// its own subnet whenever one is.
fn with_local_table(main: Vec<Route4>, local: &[route::LocalRoute]) -> Vec<Route4> {
    // Every network namespace's loopback is `lo`.
    let loopback = "lo".to_string();
    let addrs: Vec<(Ipv4Addr, String)> = local
        .iter()
        .filter(|r| r.kind == route::LocalKind::Local && r.prefix_len == 32)
        .filter_map(|r| {
            let a = r.destination;
            if a.is_loopback() {
                return Some((a, loopback.clone()));
            }
            main.iter()
                .filter(|m| m.gateway.is_none() && !m.netmask.is_unspecified() && contains(m.destination, m.netmask, a))
                .max_by_key(|m| u32::from(m.netmask))
                .map(|m| (a, m.interface.clone()))
        })
        .collect();
    let nearest = |to: Ipv4Addr, iface: Option<&str>| {
        addrs.iter().filter(|(_, i)| iface.is_none_or(|n| n == i)).max_by_key(|(a, _)| common_bits(*a, to)).cloned()
    };
    let mut out: Vec<Route4> = main
        .iter()
        .map(|m| Route4 {
            interface_addr: nearest(m.gateway.unwrap_or(m.destination), Some(&m.interface)).map(|(a, _)| a),
            ..m.clone()
        })
        .collect();
    for r in local {
        let found = if r.kind == route::LocalKind::Local && r.prefix_len == 32 {
            addrs.iter().find(|(a, _)| *a == r.destination).cloned()
        } else {
            nearest(r.destination, None)
        };
        out.push(Route4 {
            destination: r.destination,
            netmask: route::netmask(r.prefix_len),
            gateway: None,
            interface: found.as_ref().map_or_else(String::new, |(_, i)| i.clone()),
            interface_addr: found.map(|(a, _)| a),
            metric: 0,
        });
    }
    out.sort_by_key(|r| (r.destination, std::cmp::Reverse(r.netmask), r.metric));
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Rows {
    /// "Name = value" rows.
    Single(Vec<(&'static str, i128)>),
    /// "Name  Received  Sent" rows.
    InOut(Vec<(&'static str, Option<i128>, Option<i128>)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub title: &'static str,
    pub rows: Rows,
    /// What the kernel does not provide, said plainly.
    pub note: Option<&'static str>,
}

/// RFC 1213's ipRoutingDiscards counts valid routing entries thrown away
/// to free memory; Linux never discards a route that way, so it is 0
/// (wherever the section's counters exist at all).
const ROUTING_DISCARDS: &str = "";

const IPV4: &[(&str, &str)] = &[
    ("Packets Received", "InReceives"),
    ("Received Header Errors", "InHdrErrors"),
    ("Received Address Errors", "InAddrErrors"),
    ("Datagrams Forwarded", "ForwDatagrams"),
    ("Unknown Protocols Received", "InUnknownProtos"),
    ("Received Packets Discarded", "InDiscards"),
    ("Received Packets Delivered", "InDelivers"),
    ("Output Requests", "OutRequests"),
    ("Routing Discards", ROUTING_DISCARDS),
    ("Discarded Output Packets", "OutDiscards"),
    ("Output Packet No Route", "OutNoRoutes"),
    ("Reassembly Required", "ReasmReqds"),
    ("Reassembly Successful", "ReasmOKs"),
    ("Reassembly Failures", "ReasmFails"),
    ("Datagrams Successfully Fragmented", "FragOKs"),
    ("Datagrams Failing Fragmentation", "FragFails"),
    ("Fragments Created", "FragCreates"),
];

const IPV6: &[(&str, &str)] = &[
    ("Packets Received", "Ip6InReceives"),
    ("Received Header Errors", "Ip6InHdrErrors"),
    ("Received Address Errors", "Ip6InAddrErrors"),
    ("Datagrams Forwarded", "Ip6OutForwDatagrams"),
    ("Unknown Protocols Received", "Ip6InUnknownProtos"),
    ("Received Packets Discarded", "Ip6InDiscards"),
    ("Received Packets Delivered", "Ip6InDelivers"),
    ("Output Requests", "Ip6OutRequests"),
    ("Routing Discards", ROUTING_DISCARDS),
    ("Discarded Output Packets", "Ip6OutDiscards"),
    ("Output Packet No Route", "Ip6OutNoRoutes"),
    ("Reassembly Required", "Ip6ReasmReqds"),
    ("Reassembly Successful", "Ip6ReasmOKs"),
    ("Reassembly Failures", "Ip6ReasmFails"),
    ("Datagrams Successfully Fragmented", "Ip6FragOKs"),
    ("Datagrams Failing Fragmentation", "Ip6FragFails"),
    ("Fragments Created", "Ip6FragCreates"),
];

/// (name, group, received counter, sent counter). Group "IcmpMsg" counters
/// the kernel omits when zero.
const ICMPV4: &[(&str, &str, &str, &str)] = &[
    ("Messages", "Icmp", "InMsgs", "OutMsgs"),
    ("Errors", "Icmp", "InErrors", "OutErrors"),
    ("Destination Unreachable", "Icmp", "InDestUnreachs", "OutDestUnreachs"),
    ("Time Exceeded", "Icmp", "InTimeExcds", "OutTimeExcds"),
    ("Parameter Problems", "Icmp", "InParmProbs", "OutParmProbs"),
    ("Source Quenches", "Icmp", "InSrcQuenchs", "OutSrcQuenchs"),
    ("Redirects", "Icmp", "InRedirects", "OutRedirects"),
    ("Echo Replies", "Icmp", "InEchoReps", "OutEchoReps"),
    ("Echos", "Icmp", "InEchos", "OutEchos"),
    ("Timestamps", "Icmp", "InTimestamps", "OutTimestamps"),
    ("Timestamp Replies", "Icmp", "InTimestampReps", "OutTimestampReps"),
    ("Address Masks", "Icmp", "InAddrMasks", "OutAddrMasks"),
    ("Address Mask Replies", "Icmp", "InAddrMaskReps", "OutAddrMaskReps"),
    ("Router Solicitations", "IcmpMsg", "InType10", "OutType10"),
    ("Router Advertisements", "IcmpMsg", "InType9", "OutType9"),
];

const ICMPV6: &[(&str, &str, &str)] = &[
    ("Messages", "Icmp6InMsgs", "Icmp6OutMsgs"),
    ("Errors", "Icmp6InErrors", "Icmp6OutErrors"),
    ("Destination Unreachable", "Icmp6InDestUnreachs", "Icmp6OutDestUnreachs"),
    ("Packet Too Big", "Icmp6InPktTooBigs", "Icmp6OutPktTooBigs"),
    ("Time Exceeded", "Icmp6InTimeExcds", "Icmp6OutTimeExcds"),
    ("Parameter Problems", "Icmp6InParmProblems", "Icmp6OutParmProblems"),
    ("Echos", "Icmp6InEchos", "Icmp6OutEchos"),
    ("Echo Replies", "Icmp6InEchoReplies", "Icmp6OutEchoReplies"),
    ("MLD Queries", "Icmp6InGroupMembQueries", "Icmp6OutGroupMembQueries"),
    ("MLD Reports", "Icmp6InGroupMembResponses", "Icmp6OutGroupMembResponses"),
    ("MLD Dones", "Icmp6InGroupMembReductions", "Icmp6OutGroupMembReductions"),
    ("Router Solicitations", "Icmp6InRouterSolicits", "Icmp6OutRouterSolicits"),
    ("Router Advertisements", "Icmp6InRouterAdvertisements", "Icmp6OutRouterAdvertisements"),
    ("Neighbor Solicitations", "Icmp6InNeighborSolicits", "Icmp6OutNeighborSolicits"),
    ("Neighbor Advertisements", "Icmp6InNeighborAdvertisements", "Icmp6OutNeighborAdvertisements"),
    ("Redirects", "Icmp6InRedirects", "Icmp6OutRedirects"),
    // Type 138; the kernel lists per-type counters only once one is seen.
    ("Router Renumberings", "Icmp6InType138", "Icmp6OutType138"),
];

/// TCP counters Linux keeps for both families together (group "Tcp").
const TCP: &[(&str, &str)] = &[
    ("Active Opens", "ActiveOpens"),
    ("Passive Opens", "PassiveOpens"),
    ("Failed Connection Attempts", "AttemptFails"),
    ("Reset Connections", "EstabResets"),
    ("Current Connections", ""),
    ("Segments Received", "InSegs"),
    ("Segments Sent", "OutSegs"),
    ("Segments Retransmitted", "RetransSegs"),
];

const UDPV4: &[(&str, &str)] = &[
    ("Datagrams Received", "InDatagrams"),
    ("No Ports", "NoPorts"),
    ("Receive Errors", "InErrors"),
    ("Datagrams Sent", "OutDatagrams"),
];

const UDPV6: &[(&str, &str)] = &[
    ("Datagrams Received", "Udp6InDatagrams"),
    ("No Ports", "Udp6NoPorts"),
    ("Receive Errors", "Udp6InErrors"),
    ("Datagrams Sent", "Udp6OutDatagrams"),
];

/// Said once, after the last TCP section shown.
pub const TCP_SHARED_NOTE: &str = "Linux keeps one set of TCP counters for IPv4 and IPv6: \
every TCP figure here but Current Connections covers both families";
const NONE_REPORTED: &str = "not available: the kernel reports none of these counters";
const MISSING_V6: &str = "not available: /proc/net/snmp6 is missing (IPv6 disabled?)";

/// TCP sockets in ESTABLISHED or CLOSE_WAIT (the kernel's CurrEstab), per family.
pub fn current_connections(tcp: &[Connection]) -> (i128, i128) {
    use netstat_common::tcp_state::{CLOSE_WAIT, ESTABLISHED};
    let mut n = (0, 0);
    for c in tcp.iter().filter(|c| c.proto == Proto::Tcp && matches!(c.state, Some(ESTABLISHED | CLOSE_WAIT))) {
        if c.ipv6 {
            n.1 += 1;
        } else {
            n.0 += 1;
        }
    }
    n
}

fn single(c: &Counters, group: &str, table: &[(&'static str, &str)]) -> Vec<(&'static str, i128)> {
    let has = c.has_group(group);
    table
        .iter()
        .filter_map(|(name, key)| if key.is_empty() { has.then_some((*name, 0)) } else { c.get(group, key).map(|v| (*name, v)) })
        .collect()
}

/// The TCP rows: the kernel's combined counters, with Current Connections
/// (`current`) counted for the section's own family.
fn tcp_rows(c: &Counters, current: i128) -> Vec<(&'static str, i128)> {
    TCP.iter()
        .filter_map(|(name, key)| if key.is_empty() { Some((*name, current)) } else { c.get("Tcp", key).map(|v| (*name, v)) })
        .collect()
}

/// The statistics sections -s shows, narrowed by -p and -4/-6.
/// `current`: Current Connections per family, counted from a socket snapshot.
pub fn statistics(c: &Counters, current: (i128, i128), cfg: &Config) -> Vec<Section> {
    let want = |p: StatsProto| cfg.stats_proto.is_none_or(|s| s == p);
    let v4 = cfg.family.v4() || matches!(cfg.stats_proto, Some(StatsProto::Tcp | StatsProto::Udp | StatsProto::Ip | StatsProto::Icmp));
    let v6 = cfg.family.v6()
        || matches!(cfg.stats_proto, Some(StatsProto::TcpV6 | StatsProto::UdpV6 | StatsProto::IpV6 | StatsProto::IcmpV6));
    let has6 = c.has_group("");
    let v6_note = |n: Option<&'static str>| if has6 { n } else { Some(MISSING_V6) };
    let mut out = Vec::new();
    if v4 && want(StatsProto::Ip) {
        out.push(Section { title: "IPv4 Statistics", rows: Rows::Single(single(c, "Ip", IPV4)), note: None });
    }
    if v6 && want(StatsProto::IpV6) {
        out.push(Section { title: "IPv6 Statistics", rows: Rows::Single(single(c, "", IPV6)), note: v6_note(None) });
    }
    if v4 && want(StatsProto::Icmp) {
        let has_icmp = c.has_group("Icmp");
        let rows = ICMPV4
            .iter()
            .filter_map(|(name, group, rx, tx)| {
                // IcmpMsg lists only the message types seen; absent is zero.
                let get = |k: &str| c.get(group, k).or((*group == "IcmpMsg" && has_icmp).then_some(0));
                let (r, s) = (get(rx), get(tx));
                (r.is_some() || s.is_some()).then_some((*name, r, s))
            })
            .collect();
        out.push(Section { title: "ICMPv4 Statistics", rows: Rows::InOut(rows), note: None });
    }
    if v6 && want(StatsProto::IcmpV6) {
        let rows = ICMPV6
            .iter()
            .filter_map(|(name, rx, tx)| {
                let typed = |k: &str| k.starts_with("Icmp6InType") || k.starts_with("Icmp6OutType");
                let get = |k: &str| c.get("", k).or((typed(k) && has6).then_some(0));
                let (r, s) = (get(rx), get(tx));
                (r.is_some() || s.is_some()).then_some((*name, r, s))
            })
            .collect();
        out.push(Section { title: "ICMPv6 Statistics", rows: Rows::InOut(rows), note: v6_note(None) });
    }
    if v4 && want(StatsProto::Tcp) {
        out.push(Section { title: "TCP Statistics for IPv4", rows: Rows::Single(tcp_rows(c, current.0)), note: None });
    }
    if v6 && want(StatsProto::TcpV6) {
        // Without IPv6 (no snmp6) there are no IPv6 TCP figures to share.
        let rows = if has6 { tcp_rows(c, current.1) } else { Vec::new() };
        out.push(Section { title: "TCP Statistics for IPv6", rows: Rows::Single(rows), note: v6_note(None) });
    }
    if c.has_group("Tcp")
        && let Some(last) =
            out.iter_mut().rev().find(|s| s.title.starts_with("TCP ") && matches!(&s.rows, Rows::Single(r) if !r.is_empty()))
    {
        last.note = Some(TCP_SHARED_NOTE);
    }
    if v4 && want(StatsProto::Udp) {
        out.push(Section { title: "UDP Statistics for IPv4", rows: Rows::Single(single(c, "Udp", UDPV4)), note: None });
    }
    if v6 && want(StatsProto::UdpV6) {
        out.push(Section { title: "UDP Statistics for IPv6", rows: Rows::Single(single(c, "", UDPV6)), note: v6_note(None) });
    }
    for s in &mut out {
        let empty = match &s.rows {
            Rows::Single(r) => r.is_empty(),
            Rows::InOut(r) => r.is_empty(),
        };
        if empty && s.note.is_none() {
            s.note = Some(NONE_REPORTED);
        }
    }
    out
}

pub fn read_counters(proc_root: &Path) -> Result<Counters, ProcError> {
    snmp::read(proc_root)
}

#[derive(Debug, Serialize)]
pub struct InterfaceReport {
    pub total: DevCounters,
    pub interfaces: Vec<DevCounters>,
}

/// Multicast and broadcast packets the host sent: /proc/net/dev has no
/// sent multicast count, the IP layer does (IpExt, and snmp6 for IPv6).
fn sent_nonunicast(c: &Counters) -> Option<u64> {
    let v4 = [c.get("IpExt", "OutMcastPkts"), c.get("IpExt", "OutBcastPkts")];
    if v4.iter().all(Option::is_none) {
        return None;
    }
    let n = v4.into_iter().chain([c.get("", "Ip6OutMcastPkts")]).flatten().sum::<i128>();
    Some(u64::try_from(n.max(0)).unwrap_or(u64::MAX))
}

/// Interface counters, and their total; `counters` (-s's) supply what the
/// total needs beyond /proc/net/dev.
pub fn interfaces(proc_root: &Path, sys_root: &Path, counters: &Counters) -> Result<InterfaceReport, ProcError> {
    let interfaces = dev::read(proc_root, sys_root)?;
    let mut total = DevCounters { name: "total".into(), ..Default::default() };
    for d in &interfaces {
        total.rx_bytes = total.rx_bytes.saturating_add(d.rx_bytes);
        total.rx_packets = total.rx_packets.saturating_add(d.rx_packets);
        total.rx_errors = total.rx_errors.saturating_add(d.rx_errors);
        total.rx_dropped = total.rx_dropped.saturating_add(d.rx_dropped);
        total.rx_multicast = total.rx_multicast.saturating_add(d.rx_multicast);
        if let Some(n) = d.rx_nohandler {
            total.rx_nohandler = Some(total.rx_nohandler.unwrap_or(0).saturating_add(n));
        }
        total.tx_bytes = total.tx_bytes.saturating_add(d.tx_bytes);
        total.tx_packets = total.tx_packets.saturating_add(d.tx_packets);
        total.tx_errors = total.tx_errors.saturating_add(d.tx_errors);
        total.tx_dropped = total.tx_dropped.saturating_add(d.tx_dropped);
    }
    total.tx_nonunicast = sent_nonunicast(counters);
    Ok(InterfaceReport { total, interfaces })
}
