//! Readers of the proc and sys filesystems, each rooted at a directory so
//! tests can feed fixture trees. They parse and never print; a malformed
//! line is skipped, not fatal, because /proc content is kernel- and
//! version-dependent.
pub mod dev;
pub mod links;
pub mod mountinfo;
pub mod route;
pub mod snmp;
pub mod sockets;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, ProcError> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|source| ProcError::Read { path: path.to_owned(), source })
}

/// A /proc/net hex address word (`%08X` of a big-endian u32 read natively).
pub(crate) fn hex_word(s: &str) -> Option<[u8; 4]> {
    if s.len() != 8 {
        return None;
    }
    u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes)
}
