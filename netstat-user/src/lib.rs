//! netstat: connections, routes and statistics, with owners traced in the kernel.
//! Layers: `cli` → `config` → sources (`proc`, `netlink`, `tracer`) → `table` → `output`.
pub mod cli;
pub mod config;
pub mod display;
pub mod escape;
pub mod info;
pub mod live;
pub mod model;
pub mod ndjson;
pub mod netlink;
pub mod output;
pub mod owners;
pub mod proc;
pub mod resolve;
pub mod snapshot;
pub mod stream;
pub mod table;
pub mod timefmt;
pub mod tracer;

/// An error that is the user's or the environment's to fix (bad input,
/// missing privilege, missing kernel feature): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// True when the error chain is a broken pipe (`netstat | head`): a normal exit.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
