//! netstat: connections, routes and statistics, with owners traced in the kernel.
//!
//! A connection passes through the stages in this order, and each stage
//! calls only the ones after it in this list's reverse (no cycles):
//! `cli` (flags → `Config`) → `sources` (sock_diag, /proc, owners, names)
//! and `tracer` (BTF, probe plan, ring buffer) → `table` (the live table)
//! → `render` (text layouts, the one JSON encoder) → `modes` (display,
//! live, stream, probe report: each wires the stages, owns no format).
//! `model` is the connection model all of them share.
pub mod cli;
pub mod escape;
pub mod model;
pub mod modes;
pub mod render;
pub mod sources;
pub mod table;
pub mod timefmt;
pub mod tracer;

/// The git revision this binary was built from (build.rs; `unknown`
/// outside a git checkout, `NETSTAT_GIT_REV` overrides).
pub const GIT_REVISION: &str = env!("NETSTAT_GIT_REV");

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
