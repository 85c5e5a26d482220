//! tracefs: where it is mounted, and tracepoint record layouts from their
//! `format` files (never from memory).
use std::{collections::HashMap, path::{Path, PathBuf}};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing) and could not be mounted: {0}")]
    NotMounted(String),
    #[error("tracepoint {0} not found in tracefs ({1})")]
    NoTracepoint(String, String),
    #[error("tracepoint {0} has no field {1}")]
    NoField(String, String),
    #[error("tracepoint {0} field {1} is {2} bytes, expected {3}")]
    Width(String, String, u32, u32),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    /// field name -> (offset, size)
    pub fields: HashMap<String, (u32, u32)>,
}

impl Format {
    pub fn parse(name: &str, text: &str) -> Format {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse::<u32>().ok();
                } else if decl.is_none() && !part.contains(':') && !part.is_empty() {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(off), Some(sz)) = (decl, offset, size) else { continue };
            let ident = decl.split('[').next().unwrap_or("").trim();
            let ident = ident.rsplit(|c: char| c.is_whitespace() || c == '*').next().unwrap_or("");
            if !ident.is_empty() {
                fields.insert(ident.to_string(), (off, sz));
            }
        }
        Format { name: name.to_string(), fields }
    }

    pub fn field(&self, name: &str, width: u32) -> Result<u32, TracefsError> {
        let (off, size) = *self
            .fields
            .get(name)
            .ok_or_else(|| TracefsError::NoField(self.name.clone(), name.to_string()))?;
        if size != width {
            return Err(TracefsError::Width(self.name.clone(), name.to_string(), size, width));
        }
        Ok(off)
    }
}

/// The tracefs mount point: from /proc/self/mountinfo, else mounted at
/// /sys/kernel/tracing when we may.
pub fn locate(proc_root: &Path) -> Result<PathBuf, TracefsError> {
    if let Some(p) = std::env::var_os("NETSTAT_TRACEFS") {
        let p = PathBuf::from(p);
        return if p.join("events").is_dir() {
            Ok(p)
        } else {
            Err(TracefsError::NotMounted(format!("{} has no events directory", p.display())))
        };
    }
    let info = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    for (mp, _) in crate::sources::proc::mountinfo::mounts(&info, "tracefs") {
        let p = PathBuf::from(mp);
        if p.join("events").is_dir() {
            return Ok(p);
        }
    }
    let target = Path::new("/sys/kernel/tracing");
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let rc = unsafe {
        libc::mount(c("nodev").as_ptr(), c("/sys/kernel/tracing").as_ptr(), c("tracefs").as_ptr(), 0, std::ptr::null())
    };
    // EBUSY usually means the kernel automounted tracefs there as we looked
    // (a fresh sysfs, as under `ip netns exec`): it is there now.
    let err = std::io::Error::last_os_error();
    if target.join("events").is_dir() {
        return Ok(target.to_path_buf());
    }
    if rc == 0 {
        return Err(TracefsError::NotMounted(format!("{} has no events directory", target.display())));
    }
    Err(TracefsError::NotMounted(err.to_string()))
}

pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let full = format!("{category}:{name}");
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| TracefsError::NoTracepoint(full.clone(), e.to_string()))?;
    Ok(Format::parse(&full, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "name: inet_sock_set_state
ID: 1234
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;
\tfield:bogus
print fmt: \"...\"
";

    #[test]
    fn parses_format_fields() {
        let f = Format::parse("sock:inet_sock_set_state", SAMPLE);
        assert_eq!(f.field("skaddr", 8).unwrap(), 8);
        assert_eq!(f.field("oldstate", 4).unwrap(), 16);
        assert_eq!(f.field("saddr", 4).unwrap(), 32);
        assert_eq!(f.field("saddr_v6", 16).unwrap(), 40);
        assert!(matches!(f.field("saddr", 16), Err(TracefsError::Width(..))));
        assert!(matches!(f.field("missing", 4), Err(TracefsError::NoField(..))));
    }
}
