#![no_main]
//! Ring buffer records of any length and content: decode, format (text and
//! JSON), apply.
use libfuzzer_sys::fuzz_target;
use netstat_common::Event;
use netstat_user::{
    model::SockEvent,
    render::{json, stream},
    table::Table,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Event::try_from(data) {
        let e = SockEvent::decode(&e);
        // A fixed clock offset: the same input gives the same run.
        let mut buf = Vec::new();
        stream::write_event(&mut buf, &e, 1_795_478_400_000_000_000);
        let line = String::from_utf8(buf).expect("the text line is UTF-8");
        let line = line.strip_suffix('\n').expect("one line");
        assert!(!line.contains('\x1b') && !line.contains('\n'), "unescaped output: {line:?}");
        let mut buf = Vec::new();
        json::event(&mut buf, &e, 1_795_478_400_000_000_000, &mut json::Clock::default());
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("the encoder writes JSON");
        assert_eq!(v["schema"], 1);
        let mut t = Table::new(0, 16);
        t.apply(&e);
        let _ = t.take_closed();
    }
});
