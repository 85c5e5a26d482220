//! `netstat --version`: the build (version, git revision) and the kernel
//! features found.
use std::io::{self, Write};

use crate::tracer::features::{Features, Found};

use crate::GIT_REVISION;

pub fn write(f: &Features, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "netstat {} (git {GIT_REVISION}), eBPF", env!("CARGO_PKG_VERSION"))?;
    writeln!(w, "kernel: {}", f.kernel)?;
    let rows: [(&str, &Found); 6] = [
        ("BTF", &f.btf),
        ("tp_btf", &f.tp_btf),
        ("fentry/fexit", &f.fentry),
        ("kprobe", &f.kprobe),
        ("cgroup v2", &f.cgroup2),
        ("tracing privileges", &f.privileges),
    ];
    for (name, found) in rows {
        match found {
            Ok(how) => writeln!(w, "  {name:<19} yes: {how}")?,
            Err(why) => writeln!(w, "  {name:<19} no: {why}")?,
        }
    }
    Ok(())
}
