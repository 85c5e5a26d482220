//! Escaping of untrusted text (process names, paths, host names, /proc
//! content) before it reaches a terminal. JSON escaping is serde_json's job.
use std::borrow::Cow;

/// Control characters, DEL, C1 controls and backslash become visible escapes
/// (`\x1b`, `\n`, `\\`); invalid UTF-8 bytes become `\xNN`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_char(&mut out, c);
    }
    Cow::Owned(out)
}

/// Like `escape`, for raw bytes that may not be UTF-8 (comm, /proc/PID/exe).
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// A NUL-terminated kernel `comm` as text, invalid UTF-8 kept visible.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    escape_bytes(&comm[..end])
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\' || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x100 && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if needs_escape(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape("nginx: worker"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_escapes_are_made_visible() {
        assert_eq!(escape("\x1b[31mevil\n"), "\\x1b[31mevil\\n");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("\u{9b}2J"), "\\x9b2J");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
    }

    #[test]
    fn invalid_utf8_is_visible() {
        assert_eq!(escape_bytes(b"ab\xff\x1b"), "ab\\xff\\x1b");
        assert_eq!(comm_str(b"curl\0\0\0junk"), "curl");
        assert_eq!(comm_str(b"\x1b[31mevil\n\0"), "\\x1b[31mevil\\n");
    }
}
