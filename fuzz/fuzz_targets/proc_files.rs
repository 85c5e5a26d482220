#![no_main]
//! Every /proc and /etc text parser on the same arbitrary text.
use libfuzzer_sys::fuzz_target;
use netstat_user::{
    model::Proto,
    sources::{proc, resolve},
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = proc::sockets::parse_table(&text, Proto::Tcp, false);
    let _ = proc::sockets::parse_table(&text, Proto::Udp, true);
    let _ = proc::dev::parse(&text);
    let _ = proc::route::parse_v4(&text);
    let _ = proc::route::parse_v6(&text);
    let mut c = proc::snmp::Counters::default();
    c.parse_paired(&text);
    c.parse_flat(&text);
    let _ = resolve::parse_hosts(&text);
    let _ = resolve::parse_services(&text);
});
