//! Printers: netstat's text layouts and the one JSON encoder, always into
//! an `impl Write`. They take finished data (the connection model, reports)
//! and never read the system themselves, apart from name lookups through
//! `Resolver`.
pub mod connections;
pub mod history;
pub mod info;
pub mod json;
pub mod live;
pub mod probe;
pub mod stream;
pub mod version;

/// An IPv4 address as its Display writes it (`127.0.0.1`), without `fmt`:
/// the stream and JSON printers write one or two per event.
pub(crate) fn push_ipv4(out: &mut Vec<u8>, a: std::net::Ipv4Addr) {
    let mut n = itoa::Buffer::new();
    for (i, o) in a.octets().iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(n.format(*o).as_bytes());
    }
}

/// A left-aligned cell of `width`, or the text and one space when it is
/// wider, so columns never run together.
pub(crate) fn cell(out: &mut String, s: &str, width: usize) {
    out.push_str(s);
    let n = s.chars().count();
    if n < width {
        out.extend(std::iter::repeat_n(' ', width - n));
    } else {
        out.push(' ');
    }
}

/// Right-aligned, at least one space before.
pub(crate) fn rcell(out: &mut String, s: &str, width: usize) {
    let n = s.chars().count();
    let pad = if n < width { width - n } else { 1 };
    out.extend(std::iter::repeat_n(' ', pad));
    out.push_str(s);
}
