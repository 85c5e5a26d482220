//! `--probe-report`: which kernel hook uses which mechanism, or why it was
//! skipped, and the struct offsets this kernel's BTF gave.
use std::{
    io::{self, Write},
    path::Path,
};

use super::json::{self, Obj};
use crate::{
    escape::escape,
    tracer::{HookReport, HookStatus},
};

pub fn write_text(report: &[HookReport], btf: &Path, offsets: &[(String, Option<u32>)], w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "{:<18} {:<8} MECHANISM / REASON", "HOOK", "STATUS")?;
    for r in report {
        match &r.status {
            HookStatus::Attached => writeln!(w, "{:<18} {:<8} {}", r.hook, "attached", r.mechanism)?,
            HookStatus::Skipped(why) => writeln!(w, "{:<18} {:<8} {} ({})", r.hook, "skipped", r.mechanism, escape(why))?,
        }
    }
    let list: Vec<String> = offsets
        .iter()
        .map(|(k, v)| format!("{k}={}", v.map(|n| n.to_string()).unwrap_or_else(|| "?".into())))
        .collect();
    writeln!(w, "offsets from {}: {}", escape(&btf.display().to_string()), list.join(" "))
}

pub fn write_json(report: &[HookReport], btf: &Path, offsets: &[(String, Option<u32>)], w: &mut impl Write) -> io::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let mut o = Obj::document(&mut buf);
    json::array(&mut o, "hooks", report, |b, r| {
        let mut h = Obj::begin(b);
        h.str("hook", r.hook);
        match &r.status {
            HookStatus::Attached => {
                h.str("status", "attached");
                // "MECHANISM (why the forms before it were passed over)":
                // mechanism names hold no parenthesis.
                match r.mechanism.split_once(" (") {
                    Some((m, why)) => {
                        h.text("mechanism", m.as_bytes());
                        h.text("reason", why.strip_suffix(')').unwrap_or(why).as_bytes());
                    }
                    None => {
                        h.text("mechanism", r.mechanism.as_bytes());
                        h.null("reason");
                    }
                }
            }
            HookStatus::Skipped(why) => {
                h.str("status", "skipped");
                h.text("mechanism", r.mechanism.as_bytes());
                h.text("reason", why.as_bytes());
            }
        }
        h.end();
    });
    o.text("btf", btf.as_os_str().as_encoded_bytes());
    {
        let b = o.key("offsets");
        let mut m = Obj::begin(b);
        for (k, v) in offsets {
            m.opt_u64(k, v.map(u64::from));
        }
        m.end();
    }
    o.end();
    buf.push(b'\n');
    w.write_all(&buf)
}
