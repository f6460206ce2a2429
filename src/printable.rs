//! Text from outside (an upstream's reply, a file name in the maildrop, an address) is
//! shown on terminals and written to logs only after every character that could move
//! the cursor, start an escape sequence, ring a bell, end a log line or reorder text
//! (C0 and C1 controls, DEL, bidirectional overrides) is replaced by `?`, as Postfix's
//! `printable()` does. One replacement per character: lengths stay meaningful.

use std::borrow::Cow;

/// `s` with every unsafe character replaced by `?` (borrowed when there is none).
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(unsafe_char) {
        Cow::Owned(
            s.chars()
                .map(|c| if unsafe_char(c) { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// Many lines of text (a message shown on a terminal): `printable` for each, the line
/// ends and tabs kept.
pub fn printable_lines(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_escapes_and_overrides_are_replaced() {
        assert!(matches!(printable("250 2.0.0 ok"), Cow::Borrowed(_)));
        assert_eq!(
            printable("451 \x1b]0;owned\x07 try\r\nlater"),
            "451 ?]0;owned? try??later"
        );
        assert_eq!(printable("a\u{202e}cba\u{9b}"), "a?cba?");
        assert_eq!(printable("mañana"), "mañana");
        assert_eq!(
            printable_lines(b"Subject: \x1b[2Jhi\r\n\tthere\n"),
            "Subject: ?[2Jhi\r\n\tthere\n"
        );
    }
}
