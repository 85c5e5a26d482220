//! Snapshot displays: connections (-a -n -o -b -f -t -p), routes (-r),
//! statistics (-s), interfaces (-e), once or every INTERVAL until Ctrl+C.
//! The live table plugs in by implementing `ConnectionSource` and calling
//! `run_with`; everything below (filtering, names, printers) stays the same.
use std::{
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    config::{Config, Mode},
    info,
    model::{Connection, Proto},
    netlink::DumpSpec,
    output,
    owners::{OwnerLookup, ProcFdScan},
    resolve::Resolver,
    snapshot,
};

/// Where a display's connections come from.
pub trait ConnectionSource {
    /// The sockets to show, owners filled when -o/-b ask for them.
    fn connections(&mut self, cfg: &Config) -> anyhow::Result<Vec<Connection>>;
}

/// A kernel snapshot, owners from a /proc/*/fd scan.
pub struct SnapshotSource {
    pub owners: Box<dyn OwnerLookup>,
}

impl SnapshotSource {
    pub fn new(cfg: &Config) -> SnapshotSource {
        SnapshotSource { owners: Box::new(ProcFdScan { proc_root: cfg.proc_root.clone() }) }
    }
}

impl ConnectionSource for SnapshotSource {
    fn connections(&mut self, cfg: &Config) -> anyhow::Result<Vec<Connection>> {
        let mut conns = snapshot::snapshot(cfg).context("reading sockets")?;
        if cfg.owner || cfg.executable || cfg.json {
            // Only rows that will be shown need an owner.
            conns.retain(|c| output::connections::wanted(c, cfg));
            self.owners.fill(&mut conns, cfg.executable || cfg.json);
        }
        Ok(conns)
    }
}

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    run_with(cfg, &mut SnapshotSource::new(cfg))
}

/// Display once, or every INTERVAL seconds until interrupted.
pub fn run_with(cfg: &Config, source: &mut dyn ConnectionSource) -> anyhow::Result<ExitCode> {
    let names = (!cfg.numeric).then(|| Resolver::new(Path::new("/etc")));
    loop {
        let mut out = BufWriter::new(std::io::stdout().lock());
        render(cfg, source, names.as_ref(), &mut out)?;
        out.flush()?;
        drop(out);
        match cfg.interval {
            None => return Ok(ExitCode::SUCCESS),
            Some(secs) => std::thread::sleep(Duration::from_secs(secs)),
        }
    }
}

/// One display of whatever `cfg.mode` asks for.
pub fn render(
    cfg: &Config,
    source: &mut dyn ConnectionSource,
    names: Option<&Resolver>,
    w: &mut impl Write,
) -> anyhow::Result<()> {
    match cfg.mode {
        Mode::Info { route, statistics, ethernet } => render_info(cfg, route, statistics, ethernet, w),
        _ => {
            let conns = source.connections(cfg)?;
            output::connections::write(&conns, cfg, names, w)?;
            Ok(())
        }
    }
}

/// The one JSON document of an -e/-r/-s display; absent parts are left out.
#[derive(serde::Serialize, Default)]
struct InfoJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    interface_statistics: Option<info::InterfaceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interfaces: Option<Vec<crate::proc::links::Link>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statistics: Option<output::info::StatisticsJson<'a>>,
}

fn render_info(cfg: &Config, route: bool, statistics: bool, ethernet: bool, w: &mut impl Write) -> anyhow::Result<()> {
    let (proc_root, sys_root) = (&cfg.proc_root, &cfg.sys_root);
    let mut json = InfoJson::default();
    if ethernet {
        let r = info::interfaces(proc_root, sys_root)?;
        if cfg.json {
            json.interface_statistics = Some(r);
        } else {
            output::info::write_interfaces(&r, w)?;
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
            output::info::write_routes(&r, cfg.family, w)?;
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
            json.statistics = Some(output::info::StatisticsJson(&sections));
        } else {
            output::info::write_statistics(&sections, w)?;
        }
    }
    if cfg.json {
        serde_json::to_writer(&mut *w, &json)?;
        writeln!(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cli::Cli, model::ProcOwner};

    /// What the live table will do: hand over connections whose owners were
    /// captured in the kernel; the display prints them unchanged.
    struct Captured(Vec<Connection>);

    impl ConnectionSource for Captured {
        fn connections(&mut self, _cfg: &Config) -> anyhow::Result<Vec<Connection>> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn another_source_plugs_into_the_same_display() {
        let cfg = Cli::parse_args(["netstat", "-anob"]).unwrap().unwrap().into_config().unwrap();
        let conn = Connection {
            proto: Proto::Tcp,
            ipv6: false,
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:50000".parse().unwrap(),
            state: Some(netstat_common::tcp_state::ESTABLISHED),
            inode: 0,
            uid: 0,
            offloaded: false,
            owner: Some(ProcOwner { pid: 4242, comm: b"server\x1b".to_vec(), exe: None }),
        };
        let mut out = Vec::new();
        render(&cfg, &mut Captured(vec![conn]), None, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\nActive Connections\n\n  Proto  Local Address          Foreign Address        State           PID\n  \
             TCP    127.0.0.1:8080         127.0.0.1:50000        ESTABLISHED     4242\n [server\\x1b]\n"
        );
    }
}
