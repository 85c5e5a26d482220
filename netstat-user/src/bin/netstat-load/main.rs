//! `netstat-load`: real sockets from processes with distinctive names, for
//! the kernel tests and the benchmarks. Every process it makes names itself
//! (prctl PR_SET_NAME) and every subcommand ends on its own (--seconds).
//! It only talks to loopback or addresses it is given; it never traces.
mod churn;
mod handoff;
mod history_fill;
mod hold;
mod many;
mod pair;
mod sys;
mod talk;
mod udp;

use std::{net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "netstat-load", about = "Socket workloads with named processes (tests and benchmarks)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open the given sockets in one process named NAME, print one JSON
    /// line when all are open, hold them.
    Hold(hold::Args),
    /// A server process and a client process making N sequential connections.
    Pair(pair::Args),
    /// One UDP socket: bind, connect, sendto (each optional, in that order).
    Udp(udp::Args),
    /// Short-lived loopback connections from P processes, as fast as possible
    /// or at a target rate.
    Churn(churn::Args),
    /// Hold N established loopback connections across several processes.
    HoldMany(many::Args),
    /// Loopback connections handed from one process to another (fork after
    /// accept or connect, SCM_RIGHTS, SO_REUSEPORT, shared accept, io_uring).
    Handoff(handoff::Args),
    /// C held loopback connections carrying data: each sends M messages of
    /// B bytes and waits for the server's echo.
    Talk(talk::Args),
    /// N recorded connection lifetimes written through the history
    /// recorder's writer (for the query benchmarks).
    HistoryFill(history_fill::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("netstat-load: {}", msg.lines().next().unwrap_or("bad arguments").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    sys::raise_nofile();
    let res = match cli.cmd {
        Cmd::Hold(a) => hold::run(a),
        Cmd::Pair(a) => pair::run(a),
        Cmd::Udp(a) => udp::run(a),
        Cmd::Churn(a) => churn::run(a),
        Cmd::HoldMany(a) => many::run(a),
        Cmd::Handoff(a) => handoff::run(a),
        Cmd::Talk(a) => talk::run(a),
        Cmd::HistoryFill(a) => history_fill::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netstat-load: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

/// `ADDR:PORT`, IPv6 as `[ADDR]:PORT`.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("'{s}' is not ADDR:PORT (IPv6 as [ADDR]:PORT)"))
}
