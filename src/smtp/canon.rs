//! Line-ending canonicalisation for message content entering the spool from outside
//! SMTP (local injection): every line ends in CRLF. A bare LF or a bare CR becomes CRLF,
//! so no bare CR or LF is ever stored or sent upstream (RFC 5321 §2.3.8). NUL is refused:
//! it is not allowed in 7bit or 8bitmime content (RFC 5321 §4.5.2, RFC 6152).

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message contains a NUL byte")]
pub struct NulByte;

/// Streams bytes into CRLF form; feed chunks in order, then call `finish`.
#[derive(Debug, Default)]
pub struct CrlfCanon {
    pending_cr: bool,
    /// The last byte emitted was LF (or nothing was emitted yet).
    at_line_start: bool,
    emitted_any: bool,
}

impl CrlfCanon {
    pub fn new() -> CrlfCanon {
        CrlfCanon {
            at_line_start: true,
            ..CrlfCanon::default()
        }
    }

    /// Appends the canonical form of `input` to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), NulByte> {
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                if b == b'\n' {
                    self.mark(true);
                    continue;
                }
                self.mark(true);
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.mark(true);
                }
                0 => return Err(NulByte),
                _ => {
                    out.push(b);
                    self.mark(false);
                }
            }
        }
        Ok(())
    }

    /// Ends the stream; the content always ends with CRLF unless it was empty.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr || (self.emitted_any && !self.at_line_start) {
            out.extend_from_slice(b"\r\n");
            self.pending_cr = false;
        }
    }

    fn mark(&mut self, line_end: bool) {
        self.at_line_start = line_end;
        self.emitted_any = true;
    }
}

#[cfg(test)]
/// Canonicalises a whole buffer (tests and small inputs).
fn to_crlf(input: &[u8]) -> Result<Vec<u8>, NulByte> {
    let mut canon = CrlfCanon::new();
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    canon.push(input, &mut out)?;
    canon.finish(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (input, want) in [
            (&b""[..], &b""[..]),
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\rb", b"a\r\nb\r\n"),
            (b"x\n.\nMAIL FROM", b"x\r\n.\r\nMAIL FROM\r\n"),
            (b"\r.\r", b"\r\n.\r\n"),
            (b"end\r", b"end\r\n"),
            (b"no newline", b"no newline\r\n"),
            (b"\xc3\xa9\n", b"\xc3\xa9\r\n"),
        ] {
            assert_eq!(
                to_crlf(input).unwrap(),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(to_crlf(b"a\0b"), Err(NulByte));
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let input = b"one\rtwo\r\nthree\nfour\r";
        let whole = to_crlf(input).unwrap();
        for split in 0..input.len() {
            let mut canon = CrlfCanon::new();
            let mut out = Vec::new();
            canon.push(&input[..split], &mut out).unwrap();
            canon.push(&input[split..], &mut out).unwrap();
            canon.finish(&mut out);
            assert_eq!(out, whole, "split at {split}");
        }
    }
}
