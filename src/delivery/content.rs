//! A message's content as delivery sends it: in memory when it is small, or read from
//! its spool file a piece at a time when it is large, so sending a 50 MiB message holds
//! one piece, never the message. The file's checksum is checked before a large message
//! is sent (`spool::envelope::verify_body`); small ones are checked as they are loaded.
//! Dot-stuffing for DATA (RFC 5321 §4.5.2) runs over the pieces as they pass.

use std::io::SeekFrom;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::outcome::{Classified, Event, Phase, classify};

/// Content up to this size is read into memory with its batch; larger is streamed.
pub const INLINE_MAX: u64 = 256 << 10;
/// The piece read and written at a time.
pub const PIECE: usize = 64 << 10;

/// Where a message's bytes (our `Received:` first, CRLF lines) come from.
#[derive(Clone, Copy, Debug)]
pub enum Content<'a> {
    Bytes(&'a [u8]),
    File(&'a StoredFile),
}

/// A committed message's body inside its spool file, after the fields stored to go
/// before it.
#[derive(Clone, Debug)]
pub struct StoredFile {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub prepend: Vec<u8>,
}

impl Content<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::File(f) => f.prepend.len() as u64 + f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content as a reader, a piece at a time.
    pub async fn reader(&self) -> std::io::Result<Box<dyn AsyncRead + Unpin + Send + '_>> {
        self.reader_from(0).await
    }

    /// The content from byte `from` on (a resumed transfer's rest).
    pub async fn reader_from(
        &self,
        from: u64,
    ) -> std::io::Result<Box<dyn AsyncRead + Unpin + Send + '_>> {
        let from = from.min(self.len());
        match self {
            Content::Bytes(b) => Ok(Box::new(&b[from as usize..])),
            Content::File(f) => {
                let skip_prepend = from.min(f.prepend.len() as u64) as usize;
                let in_file = from - skip_prepend as u64;
                let mut file = tokio::fs::File::open(&f.path).await?;
                file.seek(SeekFrom::Start(f.offset + in_file)).await?;
                Ok(Box::new(
                    f.prepend[skip_prepend..].chain(file.take(f.len - in_file)),
                ))
            }
        }
    }
}

/// The spool file could not be read mid-transaction: the chunk cannot be completed, so
/// the connection is given up. Our failure, not the upstream's: not an attempt.
pub(crate) fn unreadable(e: &std::io::Error) -> Classified {
    let detail = e.to_string();
    classify(
        Phase::Data,
        &Event::SpoolUnreadable {
            detail,
            mid_transaction: true,
        },
    )
}

/// RFC 5321 §4.5.2 over a stream: a leading dot doubled, CRLF line ends made certain (a
/// bare CR or LF becomes CRLF, so none ever reaches the wire), and at the end the
/// terminating `.` line. NUL is passed on: stored content is sent as it was accepted.
pub struct DotStuffer {
    pending_cr: bool,
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            pending_cr: false,
            at_line_start: true,
        }
    }
}

impl DotStuffer {
    /// Appends the stuffed form of `piece` to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        out.reserve(piece.len() + piece.len() / 64 + 2);
        for &b in piece {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                _ => {
                    if self.at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// Ends the content: a last line ended, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        for p in pieces {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing_and_line_ends_across_pieces() {
        assert_eq!(
            stuffed(&[b"a\r\n.b\r\n..\r\n"]),
            b"a\r\n..b\r\n...\r\n.\r\n"
        );
        assert_eq!(stuffed(&[b".\r\n"]), b"..\r\n.\r\n");
        assert_eq!(stuffed(&[b"no end"]), b"no end\r\n.\r\n");
        assert_eq!(stuffed(&[b"x\n.\nMAIL"]), b"x\r\n..\r\nMAIL\r\n.\r\n");
        assert_eq!(stuffed(&[b""]), b".\r\n");
        // A piece ending between CR and LF, and a dot starting the next piece.
        assert_eq!(stuffed(&[b"a\r", b"\n.b\r\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(&[b"a\r\n", b".", b"b"]), b"a\r\n..b\r\n.\r\n");
    }

    #[tokio::test]
    async fn a_file_is_read_from_its_offset_for_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, b"headerBODY BYTEStrailer").unwrap();
        let file = StoredFile {
            path,
            offset: 6,
            len: 10,
            prepend: b"X: y\r\n".to_vec(),
        };
        let mut out = Vec::new();
        Content::File(&file)
            .reader()
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"X: y\r\nBODY BYTES");
        assert_eq!(Content::File(&file).len(), 16);
        for from in [0usize, 3, 6, 9, 16, 20] {
            let mut rest = Vec::new();
            Content::File(&file)
                .reader_from(from as u64)
                .await
                .unwrap()
                .read_to_end(&mut rest)
                .await
                .unwrap();
            assert_eq!(rest, &out[from.min(16)..], "from {from}");
        }
    }
}
