//! The DATA reader (RFC 5321 §4.1.1.4, §4.5.2): streams message content out of the
//! connection, removing dot-stuffing, until the line `.` CRLF. Strict: every line must
//! end CRLF; a bare LF or a CR not followed by LF is an error, never content and never
//! an end of data (SMTP smuggling). Over `max_size` the content stops being kept but is
//! still read to its end, so the session stays in step and answers 552 (memory flat).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` CR at the start of a line: LF ends the data.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR inside a line: LF must follow.
    Cr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("bare CR or LF in message content")]
    BareLineEnding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProgress {
    /// All input consumed; the data goes on.
    More,
    /// End of data after `consumed` bytes of this input; the rest is the next command.
    Done { consumed: usize },
}

#[derive(Debug)]
pub struct DataReader {
    state: State,
    max_size: u64,
    /// Content bytes seen (unstuffed), kept or not.
    size: u64,
}

impl DataReader {
    pub fn new(max_size: u64) -> DataReader {
        DataReader {
            state: State::LineStart,
            max_size,
            size: 0,
        }
    }

    /// Content size so far (after unstuffing).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The content went over `max_size` (and was not all kept).
    pub(crate) fn too_big(&self) -> bool {
        self.size > self.max_size
    }

    /// Feeds connection bytes; appends content to `out` while within the size limit.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<DataProgress, DataError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Text => {
                    // Fast path: copy up to the next CR or LF.
                    let run = input[i..]
                        .iter()
                        .position(|b| *b == b'\r' || *b == b'\n')
                        .unwrap_or(input.len() - i);
                    self.keep(&input[i..i + run], out);
                    i += run;
                    if i == input.len() {
                        break;
                    }
                    match input[i] {
                        b'\r' => self.state = State::Cr,
                        _ => return Err(DataError::BareLineEnding),
                    }
                    i += 1;
                }
                State::Cr => {
                    if input[i] != b'\n' {
                        return Err(DataError::BareLineEnding);
                    }
                    self.keep(b"\r\n", out);
                    self.state = State::LineStart;
                    i += 1;
                }
                State::LineStart => {
                    match input[i] {
                        b'.' => self.state = State::Dot,
                        b'\r' => self.state = State::Cr,
                        b'\n' => return Err(DataError::BareLineEnding),
                        _ => self.state = State::Text,
                    }
                    if self.state != State::Text {
                        i += 1;
                    }
                }
                State::Dot => match input[i] {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    b'\n' => return Err(DataError::BareLineEnding),
                    // RFC 5321 §4.5.2: drop the first dot of a longer line.
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if input[i] != b'\n' {
                        return Err(DataError::BareLineEnding);
                    }
                    self.state = State::LineStart;
                    return Ok(DataProgress::Done { consumed: i + 1 });
                }
            }
        }
        Ok(DataProgress::More)
    }

    fn keep(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let before = self.size;
        self.size += bytes.len() as u64;
        if self.size <= self.max_size {
            out.extend_from_slice(bytes);
        } else if before < self.max_size {
            out.extend_from_slice(&bytes[..(self.max_size - before) as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the data ended (offset after the final CRLF), if it did.
    type End = Result<Option<usize>, DataError>;

    /// Feeds `input` in pieces of `step` bytes; returns content and where it ended.
    fn read(input: &[u8], step: usize, max: u64) -> (End, Vec<u8>, bool) {
        let mut r = DataReader::new(max);
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in input.chunks(step.max(1)) {
            match r.feed(chunk, &mut out) {
                Ok(DataProgress::Done { consumed }) => {
                    return (Ok(Some(offset + consumed)), out, r.too_big());
                }
                Ok(DataProgress::More) => offset += chunk.len(),
                Err(e) => return (Err(e), out, r.too_big()),
            }
        }
        (Ok(None), out, r.too_big())
    }

    #[test]
    fn content_and_end_at_every_chunking() {
        let cases: &[(&[u8], End, &[u8])] = &[
            (
                b"Subject: x\r\n\r\nhi\r\n.\r\n",
                Ok(Some(21)),
                b"Subject: x\r\n\r\nhi\r\n",
            ),
            (b".\r\n", Ok(Some(3)), b""),
            (b"..x\r\n.\r\n", Ok(Some(8)), b".x\r\n"),
            (b".x\r\n.\r\nMAIL FROM:<a@b>\r\n", Ok(Some(7)), b"x\r\n"),
            (b"a\r\n..\r\n.\r\n", Ok(Some(10)), b"a\r\n.\r\n"),
            // Smuggling attempts: never an end of data, always an error.
            (
                b"x\n.\nMAIL FROM:<a@b>\r\n.\r\n",
                Err(DataError::BareLineEnding),
                b"",
            ),
            (
                b"x\r\n.\nRCPT\r\n.\r\n",
                Err(DataError::BareLineEnding),
                b"x\r\n",
            ),
            (b"x\n.\r\n", Err(DataError::BareLineEnding), b""),
            (b"x\r.\r\n", Err(DataError::BareLineEnding), b""),
            (b"x\r\n.\r", Ok(None), b"x\r\n"),
            (b"x\r\n.\rMAIL", Err(DataError::BareLineEnding), b"x\r\n"),
            (b"x\r\n\0.\r\n.\r\n", Ok(Some(10)), b"x\r\n\0.\r\n"),
            (b"x\r\n.\0\r\n.\r\n", Ok(Some(10)), b"x\r\n\0\r\n"),
        ];
        for (input, end, content) in cases {
            for step in [1, 2, 3, 7, input.len()] {
                let (got_end, got, _) = read(input, step, 1 << 20);
                assert_eq!(
                    &got_end,
                    end,
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
                if end.is_ok() {
                    assert_eq!(
                        got,
                        *content,
                        "{:?} step {step}",
                        String::from_utf8_lossy(input)
                    );
                }
            }
        }
    }

    #[test]
    fn over_the_limit_reads_to_the_end_but_keeps_only_the_limit() {
        let mut input = b"0123456789\r\n".repeat(100);
        input.extend_from_slice(b".\r\nQUIT\r\n");
        let (end, kept, too_big) = read(&input, 64, 100);
        assert_eq!(end, Ok(Some(input.len() - 6)));
        assert_eq!(kept.len(), 100);
        assert!(too_big);
        let (_, _, too_big) = read(&input, 64, 1200);
        assert!(!too_big);
    }
}
