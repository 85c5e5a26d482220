//! Snapshot displays: connections (-a -n -o -b -f -t -p), routes (-r),
//! statistics (-s), interfaces (-e), once or every INTERVAL until Ctrl+C.
use std::{
    io::{BufWriter, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    cli::config::{Config, Mode, StatsProto},
    model::{Connection, Proto},
    render,
    sources::{
        cgroup::Cgroups,
        delta, info,
        netlink::DumpSpec,
        netns::Labels,
        owners::{self, ProcFdScan},
        resolve::Resolver,
        snapshot,
    },
};

/// The sockets a display shows, owners filled when -o/-b/--json ask for
/// them, and (--all-namespaces) the labels of the namespaces they are in.
pub fn connections(cfg: &Config) -> anyhow::Result<(Vec<Connection>, Option<Labels>)> {
    let (mut conns, labels) = if cfg.all_namespaces {
        let (conns, spaces) = snapshot::all_namespaces(cfg).context("reading sockets")?;
        let mut labels = Labels::default();
        labels.extend(&spaces);
        (conns, Some(labels))
    } else {
        let mut conns = snapshot::snapshot(cfg).context("reading sockets")?;
        let ns = crate::sources::netns_inode(&cfg.proc_root);
        for c in &mut conns {
            c.id.netns = ns;
        }
        (conns, None)
    };
    if cfg.owner || cfg.executable || cfg.json || cfg.pid.is_some() {
        // Only rows that will be shown need an owner.
        conns.retain(|c| render::connections::wanted(c, cfg));
        let details = cfg.executable || cfg.json;
        let mut cgroups = Cgroups::new(&cfg.proc_root, &cfg.runtime_root);
        ProcFdScan { proc_root: cfg.proc_root.clone() }.fill_with(&mut conns, details, details.then_some(&mut cgroups));
        if cfg.executable && cfg.verbose {
            for o in conns.iter_mut().filter_map(|c| c.owner.as_mut()) {
                owners::fill_ancestors(&cfg.proc_root, o, &mut cgroups);
            }
        }
    }
    conns.retain(|c| cfg.pid_matches(c.owner.as_ref().map(|o| o.pid)));
    Ok((conns, labels))
}

/// Display once, or every INTERVAL seconds until interrupted.
pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let names = (!cfg.numeric).then(|| Resolver::system(&cfg.proc_root));
    let mut previous = Previous::default();
    loop {
        let mut out = BufWriter::new(std::io::stdout().lock());
        render(cfg, names.as_ref(), &mut previous, &mut out)?;
        out.flush()?;
        drop(out);
        match cfg.interval {
            None => return Ok(ExitCode::SUCCESS),
            Some(secs) => std::thread::sleep(Duration::from_secs(secs)),
        }
    }
}

/// What -e and -s read last, for --delta's next display.
#[derive(Default)]
pub struct Previous {
    interfaces: Option<delta::DevRows>,
    sections: Option<Vec<info::Section>>,
}

/// One display of whatever `cfg.mode` asks for.
pub fn render(cfg: &Config, names: Option<&Resolver>, previous: &mut Previous, w: &mut impl Write) -> anyhow::Result<()> {
    match cfg.mode {
        Mode::Info { route, statistics, ethernet } => render_info(cfg, route, statistics, ethernet, names, previous, w),
        _ => {
            let (conns, labels) = connections(cfg)?;
            render::connections::write(&conns, cfg, names, labels.as_ref(), w)?;
            Ok(())
        }
    }
}

fn render_info(
    cfg: &Config,
    route: bool,
    statistics: bool,
    ethernet: bool,
    names: Option<&Resolver>,
    previous: &mut Previous,
    w: &mut impl Write,
) -> anyhow::Result<()> {
    let (proc_root, sys_root) = (&cfg.proc_root, &cfg.sys_root);
    let mut json = render::info::InfoDocument::default();
    let mut shares = Vec::new();
    let dev_delta;
    if ethernet {
        let r = info::interfaces(proc_root, sys_root, &info::read_counters(proc_root)?)?;
        let rows = delta::dev_rows(&r.total);
        dev_delta = previous.interfaces.as_ref().filter(|_| cfg.delta).map(|before| delta::dev_delta(&rows, before));
        let share = dev_delta.as_ref().map(delta::dev_share);
        shares.extend(share.clone());
        if cfg.json {
            json.interface_statistics = Some(r);
        } else {
            render::info::write_interfaces(&r, cfg.verbose, dev_delta.as_ref().zip(share.as_ref()), w)?;
        }
        previous.interfaces = Some(rows);
    } else {
        dev_delta = None;
    }
    if route {
        let r = info::routes(proc_root, sys_root)?;
        if cfg.json {
            let mut routes = serde_json::Map::new();
            if cfg.family.v4() {
                routes.insert("ipv4".into(), serde_json::to_value(&r.ipv4)?);
            }
            if cfg.family.v6() {
                routes.insert("ipv6".into(), serde_json::to_value(&r.ipv6)?);
            }
            json.routes = Some(serde_json::Value::Object(routes));
            json.interfaces = Some(r.interfaces);
        } else {
            if ethernet {
                writeln!(w)?;
            }
            render::info::write_routes(&r, cfg.family, w)?;
        }
    }
    let sections;
    let sections_delta;
    if statistics {
        let counters = info::read_counters(proc_root)?;
        let tcp = snapshot::snapshot_tables(
            proc_root,
            &[DumpSpec { proto: Proto::Tcp, ipv6: false, ulp: false, states: crate::sources::netlink::ALL_STATES }, DumpSpec { proto: Proto::Tcp, ipv6: true, ulp: false, states: crate::sources::netlink::ALL_STATES }],
        )
        .context("reading sockets")?;
        sections = info::statistics(&counters, info::current_connections(&tcp), cfg);
        sections_delta = previous.sections.as_ref().filter(|_| cfg.delta).map(|before| delta::sections_delta(&sections, before));
        let share = sections_delta.as_deref().map(delta::sections_share).unwrap_or_default();
        shares.extend(share.iter().cloned());
        if cfg.json {
            json.statistics = Some(render::info::StatisticsJson(&sections));
        } else {
            render::info::write_statistics(&sections, sections_delta.as_deref().map(|d| (d, &share[..])), w)?;
            // -p names a protocol's connections too: netstat -s -p tcp
            // follows the statistics with that protocol's table.
            if matches!(cfg.stats_proto, Some(StatsProto::Tcp | StatsProto::TcpV6 | StatsProto::Udp | StatsProto::UdpV6)) {
                let (conns, labels) = connections(cfg)?;
                render::connections::write(&conns, cfg, names, labels.as_ref(), w)?;
            }
        }
        previous.sections = Some(sections.clone());
    } else {
        sections_delta = None;
    }
    if cfg.json {
        if dev_delta.is_some() || sections_delta.is_some() {
            json.delta = Some(render::info::DeltaJson {
                interface_statistics: dev_delta.as_ref(),
                statistics: sections_delta.as_deref().map(render::info::StatisticsJson),
            });
            json.error_share = Some(shares.iter().map(Into::into).collect());
        }
        json.write(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cli::Cli,
        model::{Comm, Owner, OwnerSource, SockId},
    };

    /// Connections whose owners came from anywhere (the live table hands
    /// over kernel-captured ones) print the same way; names are escaped.
    #[test]
    fn a_captured_owner_prints_like_a_snapshot_one() {
        let cfg = Cli::parse_args(["netstat", "-anob"]).unwrap().unwrap().into_config().unwrap();
        let conn = Connection {
            proto: Proto::Tcp,
            ipv6: false,
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:50000".parse().unwrap(),
            state: Some(netstat_common::tcp_state::ESTABLISHED),
            id: SockId { netns: 1, cookie: 2 },
            inode: 0,
            uid: Some(0),
            offloaded: false,
            owner: Some(Owner::new(4242, Comm::new(b"server\x1b"), OwnerSource::Captured)),
        };
        let mut out = Vec::new();
        render::connections::write(&[conn], &cfg, None, None, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\nActive Connections\n\n  Proto  Local Address          Foreign Address        State           PID\n  \
             TCP    127.0.0.1:8080         127.0.0.1:50000        ESTABLISHED     4242\n [server\\x1b]\n"
        );
    }
}
