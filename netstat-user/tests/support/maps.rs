//! The kernel maps of a running netstat, read from the test (aya, by map
//! id): what is left in them is what the programs failed to remove.
#![allow(dead_code)]
use std::collections::{BTreeSet, HashSet};

use aya::maps::{HashMap, Map, MapData, MapInfo};

/// The id of the `OWNERS` map our netstat holds: among the BPF maps in its
/// fd table (`map_id:` in /proc/PID/fdinfo), so other netstats running on
/// the machine never count.
pub fn owners_map_of(pid: u32) -> u32 {
    map_of(pid, "OWNERS")
}

/// The id of the map named `name` that netstat `pid` holds.
pub fn map_of(pid: u32, name: &str) -> u32 {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("read fdinfo").flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        ids.extend(info.lines().filter_map(|l| l.strip_prefix("map_id:")).filter_map(|v| v.trim().parse::<u32>().ok()));
    }
    let owners: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|&id| MapInfo::from_id(id).is_ok_and(|m| m.name_as_str() == Some(name)))
        .collect();
    assert_eq!(owners.len(), 1, "netstat {pid} holds {} maps named {name} (its maps: {ids:?})", owners.len());
    owners[0]
}

/// The keys (socket addresses) of the `SYN_RECV_DUE` map `id` (u64 -> u8).
pub fn due_entries(id: u32) -> Vec<u64> {
    let data = MapData::from_id(id).expect("open SYN_RECV_DUE");
    let map: HashMap<_, u64, u8> = HashMap::try_from(Map::HashMap(data)).expect("SYN_RECV_DUE as a hash map");
    let mut seen = HashSet::new();
    map.keys().filter_map(Result::ok).filter(|k| seen.insert(*k)).collect()
}

/// Every entry of map `id`: (socket address, cookie when the value carries
/// one: `Owner.cookie` at bytes 48..56 of the 120-byte value, and of the
/// 88-byte one before the holder's cgroup and parent were added).
pub fn owner_entries(id: u32) -> Vec<(u64, Option<u64>)> {
    let value_size = MapInfo::from_id(id).expect("OWNERS info").value_size() as usize;
    let data = MapData::from_id(id).expect("open OWNERS");
    match value_size {
        120 => entries::<120>(data)
            .into_iter()
            .map(|(k, v)| (k, Some(u64::from_le_bytes(v[48..56].try_into().unwrap()))))
            .collect(),
        88 => entries::<88>(data)
            .into_iter()
            .map(|(k, v)| (k, Some(u64::from_le_bytes(v[48..56].try_into().unwrap()))))
            .collect(),
        // Before ownership followed the socket: 40 bytes, no cookie.
        40 => entries::<40>(data).into_iter().map(|(k, _)| (k, None)).collect(),
        n => panic!("OWNERS values of {n} bytes: which layout is this?"),
    }
}

fn entries<const N: usize>(data: MapData) -> Vec<(u64, [u8; N])> {
    let map: HashMap<_, u64, [u8; N]> = HashMap::try_from(Map::HashMap(data)).expect("OWNERS as a hash map");
    // Entries come and go while we walk (other sockets): skip the ones that
    // went between two calls, and count each key once.
    let mut seen = HashSet::new();
    map.iter().filter_map(Result::ok).filter(|(k, _)| seen.insert(*k)).collect()
}

