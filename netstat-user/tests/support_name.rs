//! tests/support's process names: kernel tests find their own processes'
//! events by name, so two names from one test process must differ.
//! vm: one backend (checks tests/support alone)
mod support;

use std::collections::HashSet;

#[test]
fn every_call_gives_a_new_name() {
    // More calls than the old PID + clock scheme had values (100).
    let names: Vec<String> = (0..300).map(|_| support::name("tsrv")).collect();
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "repeated names: {names:?}");
    for n in &names {
        assert!(n.len() <= 15, "{n:?} does not fit in comm (15 bytes)");
        assert!(n.starts_with("tsrv"), "{n:?} lost its prefix");
    }
}

#[test]
fn a_long_prefix_is_shortened_not_the_number() {
    let (a, b) = (support::name("averyverylongprefix"), support::name("averyverylongprefix"));
    assert_ne!(a, b);
    assert!(a.len() <= 15 && b.len() <= 15, "{a:?} {b:?}");
    assert!(a.starts_with("avery"), "{a:?}");
}
