//! Snapshot displays: connections (-a -n -o -b -f -t -p), routes (-r),
//! statistics (-s), interfaces (-e), once or every INTERVAL until Ctrl+C.
use std::{
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    cli::config::{Config, Mode},
    model::{Connection, Proto},
    render,
    sources::{info, netlink::DumpSpec, owners::ProcFdScan, resolve::Resolver, snapshot},
};

/// The sockets a display shows, owners filled when -o/-b/--json ask for them.
pub fn connections(cfg: &Config) -> anyhow::Result<Vec<Connection>> {
    let mut conns = snapshot::snapshot(cfg).context("reading sockets")?;
    let ns = super::live::netns_inode(&cfg.proc_root);
    for c in &mut conns {
        c.id.netns = ns;
    }
    if cfg.owner || cfg.executable || cfg.json || cfg.pid.is_some() {
        // Only rows that will be shown need an owner.
        conns.retain(|c| render::connections::wanted(c, cfg));
        ProcFdScan { proc_root: cfg.proc_root.clone() }.fill(&mut conns, cfg.executable || cfg.json);
    }
    conns.retain(|c| cfg.pid_matches(c.owner.as_ref().map(|o| o.pid)));
    Ok(conns)
}

/// Display once, or every INTERVAL seconds until interrupted.
pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let names = (!cfg.numeric).then(|| Resolver::new(Path::new("/etc")));
    loop {
        let mut out = BufWriter::new(std::io::stdout().lock());
        render(cfg, names.as_ref(), &mut out)?;
        out.flush()?;
        drop(out);
        match cfg.interval {
            None => return Ok(ExitCode::SUCCESS),
            Some(secs) => std::thread::sleep(Duration::from_secs(secs)),
        }
    }
}

/// One display of whatever `cfg.mode` asks for.
pub fn render(cfg: &Config, names: Option<&Resolver>, w: &mut impl Write) -> anyhow::Result<()> {
    match cfg.mode {
        Mode::Info { route, statistics, ethernet } => render_info(cfg, route, statistics, ethernet, w),
        _ => {
            let conns = connections(cfg)?;
            render::connections::write(&conns, cfg, names, w)?;
            Ok(())
        }
    }
}

fn render_info(cfg: &Config, route: bool, statistics: bool, ethernet: bool, w: &mut impl Write) -> anyhow::Result<()> {
    let (proc_root, sys_root) = (&cfg.proc_root, &cfg.sys_root);
    let mut json = render::info::InfoDocument::default();
    if ethernet {
        let r = info::interfaces(proc_root, sys_root)?;
        if cfg.json {
            json.interface_statistics = Some(r);
        } else {
            render::info::write_interfaces(&r, w)?;
        }
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
    if statistics {
        let counters = info::read_counters(proc_root)?;
        let tcp = snapshot::snapshot_tables(
            proc_root,
            &[DumpSpec { proto: Proto::Tcp, ipv6: false, ulp: false }, DumpSpec { proto: Proto::Tcp, ipv6: true, ulp: false }],
        )
        .context("reading sockets")?;
        sections = info::statistics(&counters, info::current_connections(&tcp), cfg);
        if cfg.json {
            json.statistics = Some(render::info::StatisticsJson(&sections));
        } else {
            render::info::write_statistics(&sections, w)?;
        }
    }
    if cfg.json {
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
        render::connections::write(&[conn], &cfg, None, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\nActive Connections\n\n  Proto  Local Address          Foreign Address        State           PID\n  \
             TCP    127.0.0.1:8080         127.0.0.1:50000        ESTABLISHED     4242\n [server\\x1b]\n"
        );
    }
}
