#![no_main]
//! tracefs format files with arbitrary content.
use libfuzzer_sys::fuzz_target;
use netstat_user::{sources::proc::mountinfo::unescape as unescape_mount, tracer::tracefs::Format};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let f = Format::parse("fuzz:fuzz", &text);
    for name in ["skaddr", "ret", "saddr_v6"] {
        let _ = f.field(name, 8);
    }
    let _ = unescape_mount(&text);
});
