#![no_main]
//! Ring buffer records of any length and content: decode, format, apply.
use libfuzzer_sys::fuzz_target;
use netstat_common::Event;
use netstat_user::{stream, table::Table};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Event::try_from(data) {
        let line = stream::text_line(&e, netstat_user::tracer::realtime_offset_ns());
        assert!(!line.contains('\x1b') && !line.contains('\n'), "unescaped output: {line:?}");
        let mut t = Table::new(0, 16);
        t.apply(&e);
        let _ = t.take_closed();
    }
});
