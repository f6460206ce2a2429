//! BDAT content (RFC 3030): chunks of exact sizes, no dot-stuffing. Unless the body is
//! BINARYMIME, the content must still be CRLF-canonical; a bare CR or LF anywhere, even
//! across chunk boundaries, fails the message (after its chunks are read, so the session
//! stays in step). Tracks the size against the limit the same way DATA does.

#[derive(Debug)]
pub struct BdatCheck {
    binary: bool,
    pending_cr: bool,
    bad_line_ending: bool,
    max_size: u64,
    size: u64,
}

impl BdatCheck {
    pub fn new(binary: bool, max_size: u64) -> BdatCheck {
        BdatCheck {
            binary,
            pending_cr: false,
            bad_line_ending: false,
            max_size,
            size: 0,
        }
    }

    /// Looks at chunk bytes; returns the part to keep (empty once over the limit).
    pub(crate) fn feed<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if !self.binary {
            for &b in bytes {
                if (self.pending_cr && b != b'\n') || (b == b'\n' && !self.pending_cr) {
                    self.bad_line_ending = true;
                }
                self.pending_cr = b == b'\r';
            }
        }
        let before = self.size;
        self.size += bytes.len() as u64;
        if self.size <= self.max_size {
            bytes
        } else if before < self.max_size {
            &bytes[..(self.max_size - before) as usize]
        } else {
            &[]
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn too_big(&self) -> bool {
        self.size > self.max_size
    }

    /// At the LAST chunk: the content had a bare CR or LF.
    pub(crate) fn bad_line_ending(&self) -> bool {
        self.bad_line_ending || (!self.binary && self.pending_cr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_across_chunks() {
        let mut ok = BdatCheck::new(false, 1000);
        ok.feed(b"a\r");
        ok.feed(b"\nb\r\n");
        assert!(!ok.bad_line_ending());
        for chunks in [
            &[&b"a\nb"[..]][..],
            &[b"a\r", b"b\r\n"],
            &[b"a\r\n", b"\r"],
            &[b"x\r\n.\n"],
        ] {
            let mut c = BdatCheck::new(false, 1000);
            for chunk in chunks {
                c.feed(chunk);
            }
            assert!(c.bad_line_ending(), "{chunks:?}");
        }
        let mut binary = BdatCheck::new(true, 1000);
        binary.feed(b"\n\r\0");
        assert!(!binary.bad_line_ending());
    }

    #[test]
    fn size_limit() {
        let mut c = BdatCheck::new(false, 5);
        assert_eq!(c.feed(b"abc"), b"abc");
        assert_eq!(c.feed(b"defg"), b"de");
        assert_eq!(c.feed(b"h"), b"");
        assert!(c.too_big());
        assert_eq!(c.size(), 8);
    }
}
