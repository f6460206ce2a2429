//! How DSN parameters are written on the wire: xtext (RFC 3461 §4). (Content is
//! dot-stuffed as it streams: `content::DotStuffer`.)

/// RFC 3461 §4 xtext: `+XX` for `+`, `=`, and anything outside `!`..`~`.
pub(crate) fn xtext(s: &str) -> String {
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
    fn xtext_round_trips_through_our_parser() {
        for s in ["QQ+314=", "rfc822;a+b@x.example", "plain"] {
            assert_eq!(crate::smtp::command::xtext(&xtext(s)).as_deref(), Some(s));
        }
    }
}
