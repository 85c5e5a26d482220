//! `history-fill`: N connection lifetimes written into a history database
//! through the recorder's own writer (`sources::history::writer`), in its
//! own batches, for the query benchmarks: realistic rows (a few processes,
//! REMOTES distinct peers, half ending in TIME_WAIT) without waiting for the
//! kernel to make ten million connections. Prints one JSON line: rows,
//! seconds, the time span covered, and one remote address to ask for.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context as _, Result};
use netstat_common::tcp_state;
use netstat_user::{
    model::{
        Comm, Connection, Owner, OwnerSource, Process, Proto, SockId,
        history::{End, FinFirst, Recorded},
    },
    sources::history::writer::{Batch, Retention, Writer},
};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    db: PathBuf,
    #[arg(long, default_value_t = 10_000_000)]
    connections: u64,
    /// Distinct remote addresses.
    #[arg(long, default_value_t = 4096)]
    remotes: u32,
    /// Connections opened per second of recorded time.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Rows per transaction (the recorder writes a batch per 500 ms).
    #[arg(long, default_value_t = 20_000)]
    batch: usize,
    /// Also fill the outbox, as a recorder forwarding to PostgreSQL does
    /// (the fleet benchmark's backlog).
    #[arg(long)]
    outbox: bool,
}

pub fn run(a: Args) -> Result<()> {
    let retention = Retention { retain_us: i64::MAX / 4, max_bytes: None };
    let (mut writer, resume) = Writer::start(&a.db, retention, None, a.outbox).context("opening the database")?;
    let span_us = (a.connections as i64 * 1_000_000) / a.rate.max(1) as i64;
    let start_us = netstat_user::sources::history::now_us() - span_us;
    let owners: Vec<Owner> = (0..8)
        .map(|i| {
            let mut o = Owner::new(10_000 + i, Comm::new(format!("fill-{i}").as_bytes()), OwnerSource::Captured);
            o.pid_start = Some(1_000 + i as u64);
            o.exe = Some(Arc::from(std::path::Path::new("/usr/bin/fill")));
            o.creator = Some(Process { pid: o.pid, comm: o.comm, pid_start: o.pid_start });
            o.cgroup_id = Some(1);
            o
        })
        .collect();
    let t0 = Instant::now();
    let mut batch = Batch::default();
    let mut id = resume.next_id;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut sample = None;
    for n in 0..a.connections {
        let r = next();
        let remote_ix = (r % a.remotes as u64) as u32;
        let remote: SocketAddr = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 | remote_ix).into(), [443, 80, 5432, 6379][(r >> 20) as usize % 4]);
        if n == a.connections / 2 {
            sample = Some((remote, start_us + (n as i64 * 1_000_000) / a.rate.max(1) as i64));
        }
        let opened = start_us + (n as i64 * 1_000_000) / a.rate.max(1) as i64;
        let lived = 200 + (r >> 32) as i64 % 50_000;
        let active = r & 1 == 0;
        let rec = Recorded {
            id,
            conn: Connection {
                proto: Proto::Tcp,
                ipv6: false,
                local: SocketAddr::new(std::net::Ipv4Addr::new(192, 0, 2, 1).into(), 32_768 + (n % 28_000) as u16),
                remote,
                state: Some(if active { tcp_state::TIME_WAIT } else { tcp_state::LAST_ACK }),
                id: SockId { netns: 4_026_531_840, cookie: 1_000_000 + n },
                inode: 0,
                uid: Some(1000),
                offloaded: false,
                owner: Some(owners[(r >> 8) as usize % owners.len()].clone()),
            },
            opened_us: opened,
            before_recording: false,
            passive: false,
            established_after_us: Some(lived / 10),
            closing_after_us: Some(lived - lived / 10),
            closed_us: Some(opened + lived),
            end: if active { End::FinLocal } else { End::FinRemote },
            fin_first: Some(if active { FinFirst::Local } else { FinFirst::Remote }),
            bytes_sent: Some((r >> 40) % 100_000),
            bytes_received: Some((r >> 24) % 1_000_000),
            holders: Vec::new(),
            handed_over: false,
            stored: false,
            host: None,
        };
        id += 1;
        batch.rows.push(rec);
        if batch.rows.len() >= a.batch {
            writer.write(&batch).context("writing")?;
            batch.rows.clear();
        }
    }
    writer.write(&batch).context("writing")?;
    writer.stop().context("closing")?;
    let secs = t0.elapsed().as_secs_f64();
    let size = std::fs::metadata(&a.db).map(|m| m.len()).unwrap_or(0);
    let (remote, at) = sample.unwrap_or((SocketAddr::from(([10, 0, 0, 0], 443)), start_us));
    println!(
        "{}",
        json!({
            "rows": a.connections,
            "seconds": secs,
            "rows_per_second": a.connections as f64 / secs,
            "bytes": size,
            "bytes_per_row": size as f64 / a.connections.max(1) as f64,
            "first_us": start_us,
            "last_us": start_us + span_us,
            "sample_remote": remote.ip().to_string(),
            "sample_at_us": at,
        })
    );
    Ok(())
}
