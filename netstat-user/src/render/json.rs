//! The one JSON encoder (schema version 1, `schema/netstat.schema.json`):
//! every document and NDJSON line netstat writes goes through here, so the
//! same field is spelled and escaped the same way in every mode. Writes
//! into a byte buffer with no allocation per field: at half a million
//! events a second the stream must stay far below the cost of the churn.
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::{
    escape::escape_bytes,
    model::{ClosedConnection, Connection, NO_OWNER_SOURCE, Owner, SockEvent, SockId, family_key, tcp_state_name},
    timefmt::rfc3339_nanos,
};

/// `"schema"` of every document and line. Adding an optional field keeps
/// the version; renaming, removing or changing the meaning of one bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// One JSON object being written.
pub struct Obj<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn begin(buf: &'a mut Vec<u8>) -> Obj<'a> {
        buf.push(b'{');
        Obj { buf, first: true }
    }

    /// A document or line: `{"schema":1` first.
    pub fn document(buf: &'a mut Vec<u8>) -> Obj<'a> {
        const _: () = assert!(SCHEMA_VERSION == 1);
        buf.extend_from_slice(b"{\"schema\":1");
        Obj { buf, first: false }
    }

    pub fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self.buf
    }

    /// A string this program made (names, states, times): never holds a
    /// quote, backslash or control character, so it is written as it is.
    pub fn str(&mut self, k: &str, s: &str) {
        debug_assert!(!s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20), "{s:?}");
        let b = self.key(k);
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    }

    /// An untrusted string (comm, paths, host names): the one escaping rule.
    pub fn text(&mut self, k: &str, raw: &[u8]) {
        let b = self.key(k);
        untrusted(b, raw);
    }

    pub fn u64(&mut self, k: &str, n: u64) {
        let b = self.key(k);
        num(b, n);
    }

    pub fn opt_u64(&mut self, k: &str, n: Option<u64>) {
        match n {
            Some(n) => self.u64(k, n),
            None => self.null(k),
        }
    }

    pub fn bool(&mut self, k: &str, v: bool) {
        self.key(k).extend_from_slice(if v { b"true" } else { b"false" });
    }

    pub fn null(&mut self, k: &str) {
        self.key(k).extend_from_slice(b"null");
    }

    /// A value serde writes (the -e/-r/-s reports, whose fields are ours).
    pub fn serde(&mut self, k: &str, v: &impl Serialize) {
        let b = self.key(k);
        // Writing into a Vec cannot fail; a Serialize impl of ours that did
        // would be a bug, shown as null rather than as broken JSON.
        let mark = b.len();
        if serde_json::to_writer(&mut *b, v).is_err() {
            b.truncate(mark);
            b.extend_from_slice(b"null");
        }
    }

    /// Fields already encoded (`"k":v,...`), as they are.
    pub fn raw(&mut self, fields: &[u8]) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.extend_from_slice(fields);
    }

    pub fn end(self) {
        self.buf.push(b'}');
    }
}

/// JSON string of bytes that are already text of ours.
fn json_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    for &b in s {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                buf.extend_from_slice(b"\\u00");
                buf.push(b"0123456789abcdef"[(b >> 4) as usize]);
                buf.push(b"0123456789abcdef"[(b & 15) as usize]);
            }
            _ => buf.push(b),
        }
    }
    buf.push(b'"');
}

/// Untrusted bytes: `escape::escape_bytes` (control characters and invalid
/// UTF-8 as `\xNN`, as in the text output), then JSON string escaping.
fn untrusted(buf: &mut Vec<u8>, raw: &[u8]) {
    if raw.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"') {
        buf.push(b'"');
        buf.extend_from_slice(raw);
        buf.push(b'"');
    } else {
        json_str(buf, escape_bytes(raw).as_bytes());
    }
}

fn num(buf: &mut Vec<u8>, n: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn ip_str(buf: &mut Vec<u8>, ip: IpAddr) {
    buf.push(b'"');
    match ip {
        IpAddr::V4(a) => super::push_ipv4(buf, a),
        IpAddr::V6(a) => {
            use std::io::Write;
            let _ = write!(buf, "{a}");
        }
    }
    buf.push(b'"');
}

/// `{"addr":"127.0.0.1","port":8080}`, with `"name"` when names were resolved.
fn endpoint(o: &mut Obj, k: &str, a: SocketAddr, name: Option<&str>) {
    let b = o.key(k);
    b.extend_from_slice(b"{\"addr\":");
    ip_str(b, a.ip());
    b.extend_from_slice(b",\"port\":");
    num(b, a.port());
    if let Some(n) = name {
        b.extend_from_slice(b",\"name\":");
        untrusted(b, n.as_bytes());
    }
    b.push(b'}');
}

/// Formats timestamps, reusing the date and time up to the second.
#[derive(Default)]
pub struct Clock {
    sec: i128,
    prefix: String,
}

impl Clock {
    fn write(&mut self, buf: &mut Vec<u8>, unix_ns: i128) {
        let sec = unix_ns.div_euclid(1_000_000_000);
        if sec != self.sec || self.prefix.is_empty() {
            let full = rfc3339_nanos(sec * 1_000_000_000);
            // "YYYY-MM-DDTHH:MM:SS." (keep up to and including the dot)
            self.prefix = full[..full.len() - 10].to_string();
            self.sec = sec;
        }
        buf.push(b'"');
        buf.extend_from_slice(self.prefix.as_bytes());
        let mut n = unix_ns.rem_euclid(1_000_000_000) as u32;
        let mut digits = [b'0'; 9];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        buf.extend_from_slice(&digits);
        buf.extend_from_slice(b"Z\"");
    }

    pub fn field(&mut self, o: &mut Obj, k: &str, unix_ns: i128) {
        let b = o.key(k);
        self.write(b, unix_ns);
    }
}

/// Resolved names of a row's two ends (`name` in `local`/`remote`).
#[derive(Default, Clone, Copy)]
pub struct Names<'a> {
    pub local: Option<&'a str>,
    pub remote: Option<&'a str>,
}

/// The fields that say which socket: the same in rows and events.
fn socket_fields(
    o: &mut Obj,
    proto: crate::model::Proto,
    ipv6: bool,
    local: SocketAddr,
    remote: SocketAddr,
    id: SockId,
    names: Names,
) {
    o.str("proto", proto.key());
    o.str("family", family_key(ipv6));
    endpoint(o, "local", local, names.local);
    endpoint(o, "remote", remote, names.remote);
    o.opt_u64("netns", (id.netns != 0).then_some(id.netns as u64));
    o.opt_u64("cookie", (id.cookie != 0).then_some(id.cookie));
}

/// The fields that say which process: the same in rows and events.
fn owner_fields(o: &mut Obj, owner: Option<&Owner>, uid: Option<u32>) {
    o.opt_u64("uid", uid.map(u64::from));
    match owner {
        Some(w) => {
            o.u64("pid", w.pid as u64);
            if let Some(t) = w.tid {
                o.u64("tid", t as u64);
            }
            o.text("comm", w.comm.as_bytes());
            if let Some(s) = w.pid_start {
                o.u64("pid_start", s);
            }
            if let Some(p) = &w.exe {
                o.text("exe", p.as_os_str().as_encoded_bytes());
            }
            o.str("owner_source", w.source.key());
            if let Some(c) = &w.creator {
                o.u64("creator_pid", c.pid as u64);
                o.text("creator_comm", c.comm.as_bytes());
                if let Some(s) = c.pid_start {
                    o.u64("creator_pid_start", s);
                }
            }
            place_fields(o, w);
        }
        None => {
            o.null("pid");
            o.null("comm");
            o.str("owner_source", NO_OWNER_SOURCE);
        }
    }
}

/// The holder's parent, namespace PID, cgroup, unit and container.
fn place_fields(o: &mut Obj, w: &Owner) {
    if let Some(p) = &w.parent {
        o.u64("parent_pid", p.pid as u64);
        o.text("parent_comm", p.comm.as_bytes());
    }
    if let Some(n) = w.ns_pid {
        o.u64("ns_pid", n as u64);
    }
    match w.cgroup.as_deref() {
        Some(cg) => o.raw(cg.encoded.get_or_init(|| cgroup_fields(cg))),
        None => {
            if let Some(id) = w.cgroup_id {
                o.u64("cgroup_id", id);
            }
        }
    }
}

/// `"cgroup_id":N,"cgroup":...,"unit":...,"container":{...}`, encoded once
/// per cgroup.
fn cgroup_fields(cg: &crate::model::CgroupInfo) -> Box<[u8]> {
    let mut buf = Vec::with_capacity(256);
    let mut o = Obj::begin(&mut buf);
    o.u64("cgroup_id", cg.id);
    if let Some(p) = &cg.path {
        o.text("cgroup", p);
    }
    if let Some(u) = &cg.unit {
        o.text("unit", u.as_bytes());
    }
    if let Some(c) = &cg.container {
        let b = o.key("container");
        let mut obj = Obj::begin(b);
        obj.str("runtime", c.runtime);
        obj.str("id", &c.id);
        match &c.name {
            Some(n) => obj.text("name", n),
            None => obj.null("name"),
        }
        if let Some(p) = &c.pod {
            obj.str("pod", p);
        }
        obj.end();
    }
    o.end();
    // Without the braces: fields of the object they go into.
    buf[1..buf.len() - 1].into()
}

fn connection_fields(o: &mut Obj, c: &Connection, names: Names) {
    socket_fields(o, c.proto, c.ipv6, c.local, c.remote, c.id, names);
    match c.state {
        Some(s) => o.str("state", tcp_state_name(s)),
        None => o.null("state"),
    }
    o.u64("inode", c.inode);
    owner_fields(o, c.owner.as_ref(), c.uid);
    o.bool("offloaded", c.offloaded);
}

/// One row of a connection table.
pub fn connection(buf: &mut Vec<u8>, c: &Connection, names: Names) {
    let mut o = Obj::begin(buf);
    connection_fields(&mut o, c, names);
    o.end();
}

/// One row of `closed` (a live display's connections that ended).
/// `clock_offset_ns` turns CLOCK_MONOTONIC into wall-clock time.
pub fn closed(buf: &mut Vec<u8>, c: &ClosedConnection, names: Names, clock_offset_ns: i128) {
    let mut o = Obj::begin(buf);
    connection_fields(&mut o, &c.conn, names);
    match c.opened_ns {
        Some(t) => o.str("opened", &rfc3339_nanos(t as i128 + clock_offset_ns)),
        None => o.null("opened"),
    }
    o.str("closed", &rfc3339_nanos(c.closed_ns as i128 + clock_offset_ns));
    o.opt_u64("duration_ns", c.duration_ns);
    o.end();
}

/// One NDJSON line for a kernel event.
pub fn event(buf: &mut Vec<u8>, e: &SockEvent, clock_offset_ns: i128, clock: &mut Clock) {
    let mut o = Obj::document(buf);
    clock.field(&mut o, "time", e.ts_ns as i128 + clock_offset_ns);
    o.str("type", e.change.key());
    socket_fields(&mut o, e.proto, e.ipv6, e.local, e.remote, e.id, Names::default());
    if let crate::model::Change::TcpState { old, new } = e.change {
        o.str("old_state", tcp_state_name(old));
        o.str("new_state", tcp_state_name(new));
    }
    match e.change {
        crate::model::Change::Owner { state } => o.str("state", tcp_state_name(state)),
        crate::model::Change::Reset { sent, state } => {
            o.str("state", tcp_state_name(state));
            o.str("direction", if sent { "sent" } else { "received" });
        }
        _ => {}
    }
    owner_fields(&mut o, e.owner.as_ref(), e.uid);
    if let crate::model::Change::UdpBind { implicit } = e.change {
        o.bool("implicit", implicit);
    }
    if let Some(l) = e.lifetime {
        o.opt_u64("duration_ns", l.duration_ns);
        o.u64("bytes_sent", l.bytes_sent);
        o.u64("bytes_received", l.bytes_received);
        if l.error != 0 {
            o.str("error", crate::model::errno_name(l.error));
        }
    }
    o.end();
    buf.push(b'\n');
}

/// One recorded lifetime (schema `recorded_connection`, `--history`).
pub fn recorded(buf: &mut Vec<u8>, r: &crate::model::history::Recorded) {
    use crate::model::history::FinFirst;
    let rfc3339_micros = |us: i64| rfc3339_nanos(us as i128 * 1000);
    let c = &r.conn;
    let mut o = Obj::begin(buf);
    if let Some(h) = &r.host {
        o.text("host", h.as_bytes());
    }
    socket_fields(&mut o, c.proto, c.ipv6, c.local, c.remote, c.id, Names::default());
    match c.state {
        Some(s) => o.str("state", tcp_state_name(s)),
        None => o.null("state"),
    }
    o.str("end", r.end.key());
    match r.fin_first {
        Some(FinFirst::Local) => o.str("fin_first", "local"),
        Some(FinFirst::Remote) => o.str("fin_first", "remote"),
        None => {}
    }
    o.str("opened", &rfc3339_micros(r.opened_us));
    match r.closed_us {
        Some(t) => o.str("closed", &rfc3339_micros(t)),
        None => o.null("closed"),
    }
    if let Some(t) = r.closed_us {
        o.u64("duration_ns", (t - r.opened_us).max(0) as u64 * 1000);
    }
    o.bool("before_recording", r.before_recording);
    o.bool("passive", r.passive);
    if let Some(b) = r.bytes_sent {
        o.u64("bytes_sent", b);
    }
    if let Some(b) = r.bytes_received {
        o.u64("bytes_received", b);
    }
    owner_fields(&mut o, c.owner.as_ref(), c.uid);
    if !r.holders.is_empty() {
        let b = o.key("holders");
        b.push(b'[');
        for (i, (since, h)) in r.holders.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            let mut ho = Obj::begin(b);
            ho.str("since", &rfc3339_micros(*since));
            ho.u64("pid", h.pid as u64);
            ho.text("comm", h.comm.as_bytes());
            if let Some(s) = h.pid_start {
                ho.u64("pid_start", s);
            }
            if let Some(p) = &h.exe {
                ho.text("exe", p.as_os_str().as_encoded_bytes());
            }
            ho.end();
        }
        b.push(b']');
    }
    o.end();
}

/// One gap in the record (schema `history_gap`).
pub fn gap(buf: &mut Vec<u8>, g: &crate::model::history::Gap) {
    use crate::model::history::GapKind;
    let rfc3339_micros = |us: i64| rfc3339_nanos(us as i128 * 1000);
    let mut o = Obj::begin(buf);
    if let Some(h) = &g.host {
        o.text("host", h.as_bytes());
    }
    o.str("from", &rfc3339_micros(g.from_us));
    o.str("to", &rfc3339_micros(g.to_us));
    match &g.kind {
        GapKind::NotRecording => o.str("kind", "not_recording"),
        GapKind::Lost { reason, count } => {
            o.str("kind", "lost");
            o.text("reason", reason.as_bytes());
            o.u64("count", *count);
        }
    }
    o.end();
}

/// One NDJSON line for events the kernel could not deliver.
pub fn lost(buf: &mut Vec<u8>, unix_ns: i128, reason: &str, count: u64) {
    let mut o = Obj::document(buf);
    o.str("time", &rfc3339_nanos(unix_ns));
    o.str("type", "lost");
    o.u64("count", count);
    o.str("reason", reason);
    o.end();
    buf.push(b'\n');
}

/// `"connections":[...]` of a document, each row through `row`.
pub fn array<T>(o: &mut Obj, k: &str, items: &[T], mut row: impl FnMut(&mut Vec<u8>, &T)) {
    let b = o.key(k);
    b.push(b'[');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        row(b, it);
    }
    b.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CgroupInfo, Comm, Container, Owner, OwnerSource, Process};

    /// The place fields, the cgroup's encoded once and copied: valid JSON,
    /// escaped, the same on the second use.
    #[test]
    fn place_fields_of_an_owner() {
        let id = "3f1a9c3f1a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";
        let mut w = Owner::new(10, Comm::new(b"nginx"), OwnerSource::Current);
        w.parent = Some(Process { pid: 1, comm: Comm::new(b"systemd"), pid_start: None });
        w.ns_pid = Some(1);
        w.cgroup = Some(std::sync::Arc::new(CgroupInfo {
            id: 42,
            path: Some(format!("/system.slice/docker-{id}.scope/\x1b").into_bytes().into()),
            unit: Some(format!("docker-{id}.scope").into()),
            container: Some(Container { runtime: "docker", id: id.into(), name: Some(b"web\"1"[..].into()), pod: None }),
            gone: false,
            encoded: Default::default(),
        }));
        for _ in 0..2 {
            let mut buf = Vec::new();
            let mut o = Obj::begin(&mut buf);
            owner_fields(&mut o, Some(&w), Some(0));
            o.end();
            let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            assert_eq!((v["parent_pid"].as_u64(), v["parent_comm"].as_str(), v["ns_pid"].as_u64()), (Some(1), Some("systemd"), Some(1)));
            assert_eq!(v["cgroup_id"], 42);
            assert_eq!(v["cgroup"], format!("/system.slice/docker-{id}.scope/\\x1b"));
            assert_eq!(v["container"], serde_json::json!({"runtime": "docker", "id": id, "name": "web\"1"}));
        }
        // An id alone: the cgroup was never resolved.
        w.cgroup = None;
        w.cgroup_id = Some(7);
        let mut buf = Vec::new();
        let mut o = Obj::begin(&mut buf);
        owner_fields(&mut o, Some(&w), None);
        o.end();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["cgroup_id"], 7);
        assert!(v.get("cgroup").is_none());
    }
}
