#![no_main]
//! Every /proc and /etc text parser on the same arbitrary text, and the
//! cgroup path and mountinfo readers on the same bytes.
use libfuzzer_sys::fuzz_target;
use netstat_user::{
    model::Proto,
    sources::{cgroup, proc, resolve},
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
    // Cgroup paths and mountinfo (raw bytes: neither need be UTF-8).
    let _ = proc::mountinfo::cgroup2_root_in(&text);
    if let Some(p) = cgroup::v2_path(data) {
        let _ = cgroup::unit_of(p);
        if let Some(c) = cgroup::container_of(p) {
            assert_eq!(c.id.len(), 64);
            assert!(c.short().len() <= c.runtime.len() + 13);
        }
    }
    let _ = cgroup::unit_of(data);
    let _ = cgroup::container_of(data);
});
