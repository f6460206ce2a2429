//! Replies as our SMTP client reads them from an upstream (RFC 5321 §4.2), parsed
//! incrementally and bounded, because the upstream is as hostile as any client: at most
//! `MAX_REPLY_LINE` octets a line and `MAX_REPLY_LINES` lines a reply (endless `250-`
//! continuations are an error, not a memory leak), three-digit codes only, every line of
//! a reply with the same code. Enhanced status codes (RFC 3463) are split off when present.
//! Control characters in the text become `?` (`printable`): the text is shown to people.

use super::reply::Status;

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; we allow some slack.
pub const MAX_REPLY_LINE: usize = 2048;
/// More continuation lines than any real EHLO reply has.
pub const MAX_REPLY_LINES: usize = 100;

/// A complete reply from the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub status: Option<Status>,
    /// Text of each line, without the code and status.
    pub lines: Vec<String>,
}

impl Response {
    pub(crate) fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply on one line, for logs, the queue listing and DSNs: `451 4.7.1 text`.
    pub(crate) fn summary(&self) -> String {
        let status = self.status.map(|s| format!(" {s}")).unwrap_or_default();
        let text = self.lines.join(" ");
        let mut out = format!("{}{status} {text}", self.code);
        out.truncate(out.trim_end().len());
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    #[error("reply longer than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply lines with different codes")]
    MixedCodes,
}

/// Accumulates reply lines; feed it the bytes read, take complete responses out.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
    lines: Vec<String>,
    code: Option<u16>,
}

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete response, if the buffer holds one.
    pub(crate) fn take_response(&mut self) -> Result<Option<Response>, ResponseError> {
        loop {
            let Some(lf) = self.buf.iter().position(|b| *b == b'\n') else {
                if self.buf.len() > MAX_REPLY_LINE {
                    return Err(ResponseError::LineTooLong);
                }
                return Ok(None);
            };
            if lf + 1 > MAX_REPLY_LINE {
                return Err(ResponseError::LineTooLong);
            }
            let raw: Vec<u8> = self.buf.drain(..=lf).collect();
            // Shown in logs, the queue listing and notices: no escapes, no bells.
            let line = crate::printable::printable(
                String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']),
            )
            .into_owned();
            let (code, last, text) = split_line(&line)?;
            if self.code.is_some_and(|c| c != code) {
                return Err(ResponseError::MixedCodes);
            }
            self.code = Some(code);
            self.lines.push(text.to_owned());
            if self.lines.len() > MAX_REPLY_LINES {
                return Err(ResponseError::TooManyLines);
            }
            if last {
                let lines = std::mem::take(&mut self.lines);
                self.code = None;
                return Ok(Some(finish(code, lines)));
            }
        }
    }

    /// Nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.lines.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.lines.clear();
        self.code = None;
    }
}

/// `250-text`, `250 text` or `250`: code, whether last, text.
fn split_line(line: &str) -> Result<(u16, bool, &str), ResponseError> {
    let bad = || ResponseError::Malformed(line.chars().take(80).collect());
    let digits = line
        .get(..3)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?;
    let code: u16 = digits.parse().map_err(|_| bad())?;
    if !(200..600).contains(&code) && !(100..200).contains(&code) {
        return Err(bad());
    }
    match line.as_bytes().get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(bad()),
    }
}

/// Splits an enhanced status code off the first line when all lines carry the same one.
fn finish(code: u16, mut lines: Vec<String>) -> Response {
    let status = lines.first().and_then(|l| parse_status(l, code));
    if let Some(status) = status {
        let prefix = format!("{status}");
        for line in &mut lines {
            if let Some(rest) = line.strip_prefix(&prefix) {
                *line = rest.trim_start().to_owned();
            }
        }
    }
    Response {
        code,
        status,
        lines,
    }
}

/// RFC 3463 `class.subject.detail`, whose class must match the reply code's first digit.
fn parse_status(line: &str, code: u16) -> Option<Status> {
    let word = line.split(' ').next()?;
    let mut parts = word.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || u16::from(class) != code / 100 || !(2..=5).contains(&class) {
        return None;
    }
    (subject < 1000 && detail < 1000).then_some(Status(class, subject, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Result<Vec<Response>, ResponseError> {
        let mut r = ResponseReader::new();
        let mut out = Vec::new();
        for b in input.chunks(3) {
            r.push(b);
            while let Some(resp) = r.take_response()? {
                out.push(resp);
            }
        }
        Ok(out)
    }

    #[test]
    fn well_formed() {
        let got = read_all(b"220 hub.example ESMTP\r\n250-hub.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n451 4.7.1 try later\r\n250\r\n").unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].lines, ["hub.example", "PIPELINING", "CHUNKING"]);
        assert_eq!(got[1].status, None);
        assert_eq!(got[2].status, Some(Status(4, 7, 1)));
        assert_eq!(got[2].summary(), "451 4.7.1 try later");
        assert!(got[2].is_transient());
        assert_eq!(got[3].summary(), "250");
        // A status whose class disagrees with the code is just text.
        let odd = read_all(b"550 2.0.0 odd\r\n").unwrap();
        assert_eq!(odd[0].status, None);
    }

    #[test]
    fn hostile() {
        let endless = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(read_all(&endless), Err(ResponseError::TooManyLines));
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 1 << 20));
        assert_eq!(read_all(&long), Err(ResponseError::LineTooLong));
        assert!(matches!(
            read_all(b"2x0 nope\r\n"),
            Err(ResponseError::Malformed(_))
        ));
        assert!(matches!(
            read_all(b"999 nope\r\n"),
            Err(ResponseError::Malformed(_))
        ));
        assert!(matches!(
            read_all(b"250_x\r\n"),
            Err(ResponseError::Malformed(_))
        ));
        assert_eq!(
            read_all(b"250-a\r\n550 b\r\n"),
            Err(ResponseError::MixedCodes)
        );
    }
}
