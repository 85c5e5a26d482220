//! The live display's `Closed since last display` section and its footer
//! (losses, dropped rows).
use std::io::{self, Write};

use super::{connections, stream::format_duration};
use crate::{
    escape::escape_bytes,
    model::{ClosedConnection, Proto, tcp_state_name},
    sources::resolve::Resolver,
    cli::config::Config,
};

pub fn write(closed: &[ClosedConnection], cfg: &Config, names: Option<&Resolver>, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "\nClosed since last display\n")?;
    writeln!(w, "  {:<7}{:<23}{:<23}{:<16}{:<9}Lived", "Proto", "Local Address", "Foreign Address", "Final State", "PID")?;
    for c in closed {
        let conn = &c.conn;
        let local = connections::endpoint(conn.local, conn.proto, names, false, cfg.fqdn);
        let remote = if conn.proto == Proto::Udp && conn.remote.port() == 0 {
            "*:*".to_string()
        } else {
            connections::endpoint(conn.remote, conn.proto, names, true, cfg.fqdn)
        };
        let state = conn.state.map(tcp_state_name).unwrap_or("");
        let pid = conn.owner.as_ref().map(|o| o.pid.to_string()).unwrap_or_else(|| "-".into());
        let lived = c.duration_ns.map(format_duration).unwrap_or_else(|| "-".into());
        writeln!(w, "  {:<7}{:<23}{:<23}{:<16}{:<9}{}", conn.proto.name(), local, remote, state, pid, lived)?;
        if cfg.executable {
            match &conn.owner {
                Some(o) => {
                    let name = match &o.exe {
                        Some(p) if cfg.verbose => escape_bytes(p.as_os_str().as_encoded_bytes()),
                        Some(p) => p.file_name().map(|f| escape_bytes(f.as_encoded_bytes())).unwrap_or_default(),
                        None => escape_bytes(o.comm.as_bytes()),
                    };
                    writeln!(w, " [{name}]")?;
                }
                None => writeln!(w, " Can not obtain ownership information")?,
            }
        }
    }
    Ok(())
}

/// Losses and dropped rows, when there were any.
pub fn footer(
    lost_events: u64,
    lost_since: Option<&str>,
    by_reason: &std::collections::BTreeMap<&'static str, u64>,
    dropped: u64,
    row_cap: usize,
    w: &mut impl Write,
) -> io::Result<()> {
    if lost_events > 0 {
        let reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(
            w,
            "\ntable may be incomplete: {lost_events} events lost since {} ({})",
            lost_since.unwrap_or("start"),
            reasons.join(", ")
        )?;
    }
    if dropped > 0 {
        writeln!(w, "{dropped} rows dropped (row cap {row_cap}; raise --max-rows)")?;
    }
    Ok(())
}
