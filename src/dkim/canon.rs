//! DKIM's "relaxed" canonicalisation (RFC 6376 §3.4.2 for header fields, §3.4.4 for the
//! body). The body form is computed as the content streams by, a piece at a time, so a
//! message of any size is hashed in bounded memory: white space at line ends goes, runs
//! of white space become one space, and empty lines at the end are held back until
//! something follows them (they are dropped if nothing does).

/// `name:value` of one header field in relaxed form, without the CRLF: the name in
/// lower case, the value unfolded, runs of white space made one space, white space at
/// either end of the value and around the colon removed.
pub(crate) fn relaxed_header(field: &[u8]) -> Vec<u8> {
    let name = crate::smtp::fields::name(field);
    let value = crate::smtp::fields::value(field);
    let mut out = Vec::with_capacity(field.len());
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let mut space = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && out.last() != Some(&b':') {
                    out.push(b' ');
                }
                space = false;
                out.push(b);
            }
        }
    }
    out
}

/// The body in relaxed form, fed a piece at a time.
#[derive(Debug, Default)]
pub struct RelaxedBody {
    /// Line ends seen and not yet written: they may end the body.
    pending_lines: usize,
    /// White space seen in the line and not yet written: it may end the line.
    pending_space: bool,
    /// A CR whose LF has not come yet.
    pending_cr: bool,
    /// Something other than line ends was written.
    written: bool,
}

impl RelaxedBody {
    /// Feeds `piece`; appends the canonical bytes that are certain to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        for &b in piece {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    self.pending_space = false;
                    self.pending_lines += 1;
                    continue;
                }
                self.text(b'\r', out);
            }
            match b {
                b'\r' => self.pending_cr = true,
                b' ' | b'\t' => self.pending_space = true,
                _ => self.text(b, out),
            }
        }
    }

    fn text(&mut self, b: u8, out: &mut Vec<u8>) {
        for _ in 0..self.pending_lines {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_lines = 0;
        if self.pending_space {
            out.push(b' ');
            self.pending_space = false;
        }
        out.push(b);
        self.written = true;
    }

    /// Ends the body: a non-empty body ends with exactly one CRLF; an empty one is empty.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.text(b'\r', out);
        }
        if self.written {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pieces: &[&[u8]]) -> Vec<u8> {
        let mut c = RelaxedBody::default();
        let mut out = Vec::new();
        for p in pieces {
            c.push(p, &mut out);
        }
        c.finish(&mut out);
        out
    }

    #[test]
    fn the_examples_of_rfc_6376_3_4_5() {
        assert_eq!(relaxed_header(b"A: X\r\n"), b"a:X".to_vec());
        assert_eq!(relaxed_header(b"B : Y\t\r\n\tZ  \r\n"), b"b:Y Z".to_vec());
        assert_eq!(
            body(&[b" C \r\nD \t E\r\n\r\n\r\n"]),
            b" C\r\nD E\r\n".to_vec()
        );
    }

    #[test]
    fn pieces_do_not_matter_and_trailing_blank_lines_go() {
        let text: &[u8] = b"line one  \r\n\r\n  indented\t\ttabs \r\n \r\n\r\n";
        let whole = body(&[text]);
        assert_eq!(whole, b"line one\r\n\r\n indented tabs\r\n".to_vec());
        for cut in 0..text.len() {
            assert_eq!(body(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
        assert_eq!(body(&[b""]), b"".to_vec());
        assert_eq!(body(&[b"\r\n\r\n"]), b"".to_vec());
        assert_eq!(body(&[b"no end"]), b"no end\r\n".to_vec());
        assert_eq!(
            body(&[b"8-bit \xc3\xa9  \r\n"]),
            b"8-bit \xc3\xa9\r\n".to_vec()
        );
    }
}
