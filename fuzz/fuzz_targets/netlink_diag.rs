#![no_main]
//! sock_diag replies (inet_diag_msg plus attributes) of any shape.
use libfuzzer_sys::fuzz_target;
use netstat_user::{
    model::Proto,
    sources::netlink::{DumpSpec, parse_diag_msg},
};

fuzz_target!(|data: &[u8]| {
    for (proto, ipv6, ulp) in [(Proto::Tcp, false, true), (Proto::Tcp, true, true), (Proto::Udp, false, false)] {
        let _ = parse_diag_msg(data, DumpSpec { proto, ipv6, ulp, states: netstat_user::sources::netlink::ALL_STATES });
    }
});
