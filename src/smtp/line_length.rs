//! Line length (RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6): a line of a message is at most
//! 998 octets, its CRLF not counted. Over SMTP a longer line is refused (the client
//! hears why, and may encode the message), which `LineLength` notices as content
//! streams by. A local program's message is ours to send right, so `Folder` breaks each
//! longer line as Postfix's client does: CRLF and a space after 998 octets. Both work on
//! content whose lines all end in CRLF.

/// RFC 5322 §2.1.1: at most 998 characters a line, excluding the CRLF.
pub const MAX_LINE: usize = 998;

/// Notices a line longer than `MAX_LINE`.
#[derive(Debug, Default)]
pub struct LineLength {
    run: usize,
    too_long: bool,
}

impl LineLength {
    pub(crate) fn feed(&mut self, content: &[u8]) {
        for &b in content {
            match b {
                b'\n' => self.run = 0,
                b'\r' => {}
                _ => {
                    self.run += 1;
                    self.too_long |= self.run > MAX_LINE;
                }
            }
        }
    }

    pub fn too_long(&self) -> bool {
        self.too_long
    }
}

/// Breaks lines longer than `MAX_LINE`: after 998 octets, CRLF and a space, then the
/// rest (broken again if need be).
#[derive(Debug, Default)]
pub struct Folder {
    run: usize,
    folded: bool,
}

impl Folder {
    /// Appends `content`, folded, to `out`.
    pub fn push(&mut self, content: &[u8], out: &mut Vec<u8>) {
        for &b in content {
            match b {
                b'\n' => self.run = 0,
                b'\r' => {}
                _ => {
                    if self.run >= MAX_LINE {
                        out.extend_from_slice(b"\r\n ");
                        self.run = 1;
                        self.folded = true;
                    }
                    self.run += 1;
                }
            }
            out.push(b);
        }
    }

    /// Some line was broken.
    pub fn folded(&self) -> bool {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_998_pass_and_longer_ones_are_seen_or_folded() {
        let ok = [vec![b'a'; 998], b"\r\n".to_vec()].concat();
        let mut seen = LineLength::default();
        seen.feed(&ok[..500]);
        seen.feed(&ok[500..]);
        assert!(!seen.too_long());
        seen.feed(&[b'b'; 999]);
        assert!(seen.too_long());

        let mut folder = Folder::default();
        let mut out = Vec::new();
        folder.push(&ok, &mut out);
        assert_eq!(out, ok);
        assert!(!folder.folded());
        let long = [vec![b'x'; 2500], b"\r\nend\r\n".to_vec()].concat();
        let mut out = Vec::new();
        folder.push(&long[..1000], &mut out);
        folder.push(&long[1000..], &mut out);
        assert!(folder.folded());
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE + 1), "CR included");
        assert_eq!(lines[0].len(), 999);
        assert!(lines[1].starts_with(b" x"));
        let unfolded = String::from_utf8(out.clone()).unwrap().replace("\r\n ", "");
        assert_eq!(unfolded.as_bytes(), long, "only breaks were added");
        let mut again = LineLength::default();
        again.feed(&out);
        assert!(!again.too_long());
    }
}
