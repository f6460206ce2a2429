//! Command-line framing (RFC 5321 §2.3.8, §4.5.3.1.4): a command ends with CRLF and is at
//! most 512 octets including it. A bare LF, or a CR not followed by LF, is an error the
//! session answers with 521 and a close: it is how SMTP smuggling starts. An over-long
//! line is skipped up to its CRLF, so the session stays in step with the client.

/// RFC 5321 §4.5.3.1.4: command line, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;

#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A complete line (without CRLF) and the bytes it took from the buffer.
    Line { len: usize, consumed: usize },
    /// An over-long line was discarded: answer 500 and go on.
    TooLong { consumed: usize },
    /// More input is needed; `consumed` bytes of an over-long line may be dropped.
    Incomplete { consumed: usize },
    /// A bare CR or LF: answer 521 and close.
    BareLineEnding,
}

/// Splits command lines out of a byte stream, remembering an over-long line across reads.
#[derive(Debug, Default)]
pub struct LineFramer {
    skipping: bool,
}

impl LineFramer {
    pub fn new() -> LineFramer {
        LineFramer::default()
    }

    pub fn next(&mut self, buf: &[u8]) -> Framed {
        let Some(lf) = buf.iter().position(|b| *b == b'\n') else {
            return if self.skipping || buf.len() >= MAX_COMMAND_LINE {
                // Keep a trailing CR: it may pair with the LF of the next read.
                let keep = usize::from(buf.last() == Some(&b'\r'));
                if buf[..buf.len() - keep].contains(&b'\r') {
                    return Framed::BareLineEnding;
                }
                self.skipping = true;
                Framed::Incomplete {
                    consumed: buf.len() - keep,
                }
            } else if buf
                .iter()
                .position(|b| *b == b'\r')
                .is_some_and(|cr| cr + 1 < buf.len())
            {
                Framed::BareLineEnding
            } else {
                Framed::Incomplete { consumed: 0 }
            };
        };
        if lf == 0 || buf[lf - 1] != b'\r' || buf[..lf - 1].contains(&b'\r') {
            return Framed::BareLineEnding;
        }
        if self.skipping || lf + 1 > MAX_COMMAND_LINE {
            self.skipping = false;
            return Framed::TooLong { consumed: lf + 1 };
        }
        Framed::Line {
            len: lf - 1,
            consumed: lf + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let mut f = LineFramer::new();
        assert_eq!(
            f.next(b"NOOP\r\nQUIT\r\n"),
            Framed::Line {
                len: 4,
                consumed: 6
            }
        );
        assert_eq!(f.next(b"NOO"), Framed::Incomplete { consumed: 0 });
        assert_eq!(f.next(b"NOOP\r"), Framed::Incomplete { consumed: 0 });
        assert_eq!(f.next(b"NOOP\n"), Framed::BareLineEnding);
        assert_eq!(f.next(b"NO\rOP\r\n"), Framed::BareLineEnding);
        assert_eq!(f.next(b"NO\rOP"), Framed::BareLineEnding);
        assert_eq!(f.next(b"\n"), Framed::BareLineEnding);
        let exact = [b"X".repeat(510), b"\r\n".to_vec()].concat();
        assert_eq!(
            f.next(&exact),
            Framed::Line {
                len: 510,
                consumed: 512
            }
        );
    }

    #[test]
    fn an_over_long_line_is_skipped_and_the_next_one_read() {
        let mut f = LineFramer::new();
        let long = b"X".repeat(600);
        assert_eq!(f.next(&long), Framed::Incomplete { consumed: 600 });
        assert_eq!(f.next(b"YYY\r"), Framed::Incomplete { consumed: 3 });
        assert_eq!(f.next(b"\r\nNOOP\r\n"), Framed::TooLong { consumed: 2 });
        assert_eq!(
            f.next(b"NOOP\r\n"),
            Framed::Line {
                len: 4,
                consumed: 6
            }
        );
        let long_line = [b"X".repeat(513), b"\r\n".to_vec()].concat();
        assert_eq!(f.next(&long_line), Framed::TooLong { consumed: 515 });
    }
}
