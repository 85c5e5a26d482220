//! A newc cpio archive writer, for the guest's initramfs.
use std::{collections::BTreeSet, fs, io::Write, path::Path};

use anyhow::{Context as _, Result};

/// A newc cpio archive, uncompressed (the kernel unpacks it fastest that way).
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Cpio { out, ino: 1, dirs: BTreeSet::new() }
    }

    pub fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1,
            name.len() as u32 + 1, 0,
        ];
        self.ino += 1;
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())?;
        Ok(())
    }

    fn pad(&mut self, len: usize) -> Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0; 3][..n])?;
        Ok(())
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040755, (0, 0), &[])
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o100000 | mode, (0, 0), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o120777, (0, 0), target.as_bytes())
    }

    pub fn host_file(&mut self, guest: &str, host: &Path, mode: u32) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, mode, &data)
    }

    pub fn finish(mut self) -> Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut buf = Vec::new();
        let mut c = Cpio::new(&mut buf);
        c.file("/a/b/c", 0o644, b"hello").unwrap();
        c.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("070701"));
        // a, a/b, a/b/c, trailer
        assert_eq!(text.matches("070701").count(), 4);
        assert!(text.contains("a/b/c\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
