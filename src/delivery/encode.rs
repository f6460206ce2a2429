//! How content and parameters are written on the wire: dot-stuffing for DATA (RFC 5321
//! §4.5.2) with CRLF line ends made certain, and xtext for DSN parameters (RFC 3461 §4).

use crate::smtp::canon::CrlfCanon;

/// RFC 5321 §4.5.2: a leading dot doubled; CRLF line ends made certain (no bare CR or LF
/// ever reaches the wire); then the terminating `.` line.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut canonical = Vec::with_capacity(content.len() + 2);
    let mut canon = CrlfCanon::new();
    // NUL is not refused here: stored content is sent as it was accepted.
    if canon.push(content, &mut canonical).is_err() {
        canonical = content.to_vec();
    } else {
        canon.finish(&mut canonical);
    }
    let mut out = Vec::with_capacity(canonical.len() + canonical.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in &canonical {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// RFC 3461 §4 xtext: `+XX` for `+`, `=`, and anything outside `!`..`~`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_line_ends() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..\r\n"), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\n.\nMAIL"), b"x\r\n..\r\nMAIL\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn xtext_round_trips_through_our_parser() {
        for s in ["QQ+314=", "rfc822;a+b@x.example", "plain"] {
            assert_eq!(crate::smtp::command::xtext(&xtext(s)).as_deref(), Some(s));
        }
    }
}
