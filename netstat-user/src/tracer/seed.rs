//! Seeding the kernel's listener map at start: listeners older than the
//! tracer name their children from the first transition, as the ones it
//! saw start do. Keyed as the kernel keys them (namespace inode, port).
use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{Ebpf, maps::HashMap};
use netstat_common::{COMM_LEN, ListenKey, Listener, Owner, flags, names};

use crate::model::{Connection, clock_ticks};

/// One entry per port: the listeners sharing it counted, the owner of the
/// first one some process holds. A port no process holds is left out.
pub fn listeners(ebpf: &mut Ebpf, conns: &[Connection], netns: u32) -> anyhow::Result<()> {
    if conns.is_empty() || netns == 0 {
        return Ok(());
    }
    let mut map: HashMap<_, ListenKey, Listener> =
        HashMap::try_from(ebpf.map_mut(names::LISTENERS).context("LISTENERS map missing")?)?;
    let mut ports: BTreeMap<u16, (u64, Option<&Connection>)> = BTreeMap::new();
    for c in conns.iter().filter(|c| c.is_listener()) {
        let e = ports.entry(c.local.port()).or_default();
        e.0 += 1;
        if e.1.is_none() && c.owner.is_some() {
            e.1 = Some(c);
        }
    }
    for (port, (count, conn)) in ports {
        let Some(c) = conn else { continue };
        let Some(o) = &c.owner else { continue };
        let mut comm = [0u8; COMM_LEN];
        comm[..o.comm.as_bytes().len()].copy_from_slice(o.comm.as_bytes());
        let start_ns = o.pid_start.map_or(0, |t| t * (1_000_000_000 / clock_ticks()));
        let owner = Owner {
            tgid: o.pid,
            pid: o.pid,
            uid: c.uid.unwrap_or(u32::MAX),
            flags: flags::OWNER_LISTENER,
            comm,
            start_ns: 0,
            pid_start_ns: start_ns,
            cookie: 0,
            creator_tgid: o.pid,
            accept_due: 0,
            creator_start_ns: start_ns,
            creator_comm: comm,
            cgroup_id: o.cgroup_id.unwrap_or(0),
            parent_tgid: o.parent.as_ref().map_or(0, |p| p.pid),
            ns_pid: o.ns_pid.unwrap_or(0),
            parent_comm: o.parent.as_ref().map_or([0; COMM_LEN], |p| {
                let mut c = [0u8; COMM_LEN];
                c[..p.comm.as_bytes().len()].copy_from_slice(p.comm.as_bytes());
                c
            }),
        };
        let key = ListenKey { netns, port, _pad: 0 };
        // A full map is the kernel's to count later; seeding stops there.
        if map.insert(key, Listener { owner, count }, 0).is_err() {
            break;
        }
    }
    Ok(())
}
