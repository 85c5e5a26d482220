//! Kernel tests: UDP bind (explicit and implicit), connect and close, each
//! attributed to the process that did it.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn events_of<'a>(events: &'a [Value], comm: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["comm"] == comm && e["proto"] == "udp").collect()
}

fn kinds(ev: &[&Value]) -> Vec<String> {
    ev.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

fn run(stream: &Stream, comm: &str, args: &[&str]) -> (u32, Value) {
    let mut full = vec!["udp", "--name", comm];
    full.extend_from_slice(args);
    let out = load(&full);
    let info = out.iter().find(|v| v.get("local").is_some()).cloned().expect("udp line");
    stream.wait_for(Duration::from_secs(5), |ev| ev.iter().any(|e| e["comm"] == comm && e["type"] == "udp_close"));
    (pid_of(&info), info)
}

#[test]
fn udp_bind_connect_close_attributed() {
    let stream = Stream::start(&[]);
    let explicit = name("ubind");
    let implicit_send = name("usend");
    let implicit_conn6 = name("uconn");
    let (p1, i1) = run(&stream, &explicit, &["--bind", "127.0.0.1:0", "--connect", "127.0.0.1:9"]);
    let (p2, i2) = run(&stream, &implicit_send, &["--sendto", "127.0.0.1:9"]);
    let (p3, i3) = run(&stream, &implicit_conn6, &["--connect", "[::1]:9"]);
    let events = stream.stop();

    let e1 = events_of(&events, &explicit);
    assert_eq!(kinds(&e1), ["udp_bind", "udp_connect", "udp_close"], "{e1:?}");
    assert!(e1.iter().all(|e| e["pid"] == p1), "{e1:?}");
    assert_eq!(e1[0]["implicit"], false);
    assert_eq!(ep(&e1[0]["local"]), ep(&i1["local"]));
    assert_eq!(ep(&e1[1]["local"]), ep(&i1["local"]));
    assert_eq!(ep(&e1[1]["remote"]), "127.0.0.1:9");
    assert_eq!(ep(&e1[2]["local"]), ep(&i1["local"]));

    let e2 = events_of(&events, &implicit_send);
    assert_eq!(kinds(&e2), ["udp_bind", "udp_close"], "{e2:?}");
    assert!(e2.iter().all(|e| e["pid"] == p2), "{e2:?}");
    assert_eq!(e2[0]["implicit"], true, "{}", e2[0]);
    let port = ep(&i2["local"]).rsplit(':').next().unwrap().to_string();
    assert!(ep(&e2[0]["local"]).ends_with(&format!(":{port}")), "{} vs {}", e2[0], i2);

    let e3 = events_of(&events, &implicit_conn6);
    assert_eq!(kinds(&e3), ["udp_bind", "udp_connect", "udp_close"], "{e3:?}");
    assert!(e3.iter().all(|e| e["pid"] == p3 && e["family"] == "ipv6"), "{e3:?}");
    assert_eq!(e3[0]["implicit"], true);
    assert_eq!(ep(&e3[1]["local"]), ep(&i3["local"]));
    assert_eq!(ep(&e3[1]["remote"]), "[::1]:9");
}
