//! Trace headers (RFC 5321 §4.4): the `Received:` line we prepend, with the protocol
//! named per RFC 3848, and a counter of the `Received:` fields already in a message's
//! header section, fed chunk by chunk, for loop detection. Nothing a client sent goes
//! into our header unfiltered: the EHLO name is reduced to host-name characters.

/// More `Received:` fields than this means a mail loop (RFC 5321 §6.3).
pub const MAX_RECEIVED: usize = 100;

pub struct TraceInfo<'a> {
    pub helo: Option<&'a str>,
    pub client: std::net::IpAddr,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub tls: bool,
    pub authenticated: bool,
    pub id: &'a str,
    /// The only recipient, when there is exactly one (more would leak Bcc).
    pub single_recipient: Option<&'a str>,
}

pub fn received_header(t: &TraceInfo<'_>) -> String {
    let helo: String = t
        .helo
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(*c))
        .take(255)
        .collect();
    let protocol = match (t.esmtp, t.tls, t.authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    let date = jiff::fmt::rfc2822::to_string(&jiff::ZonedDateTime::now()).unwrap_or_default();
    let for_clause = t
        .single_recipient
        .map(|r| format!("\r\n\tfor <{r}>"))
        .unwrap_or_default();
    format!(
        "Received: from {helo} ([{}])\r\n\tby {} (ferrymail) with {protocol} id {}{for_clause};\r\n\t{date}\r\n",
        t.client, t.hostname, t.id
    )
}

/// Counts `Received:` fields in the header section of content fed in chunks.
#[derive(Debug)]
pub struct ReceivedCounter {
    in_headers: bool,
    /// The start of the current line (up to 9 bytes, enough for `received:`).
    line_start: Vec<u8>,
    at_line_start: bool,
    count: usize,
}

impl Default for ReceivedCounter {
    fn default() -> Self {
        ReceivedCounter {
            in_headers: true,
            line_start: Vec::with_capacity(9),
            at_line_start: true,
            count: 0,
        }
    }
}

impl ReceivedCounter {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if !self.in_headers {
                return;
            }
            if self.at_line_start {
                if b == b'\r' || b == b'\n' {
                    // An empty line ends the header section.
                    self.in_headers = false;
                    return;
                }
                self.at_line_start = false;
                self.line_start.clear();
            }
            if b == b'\n' {
                self.at_line_start = true;
                continue;
            }
            if self.line_start.len() < 9 {
                self.line_start.push(b);
                if self.line_start.len() == 9 && self.line_start.eq_ignore_ascii_case(b"received:")
                {
                    self.count += 1;
                }
            }
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_header_section_at_any_chunking() {
        let mut msg = b"Received: a\r\nRECEIVED: b\r\n\tcontinued received: no\r\nX-Received: no\r\nSubject: s\r\n".to_vec();
        msg.extend_from_slice(b"\r\nReceived: in the body\r\n");
        for step in 1..msg.len() {
            let mut c = ReceivedCounter::default();
            for chunk in msg.chunks(step) {
                c.feed(chunk);
            }
            assert_eq!(c.count(), 2, "step {step}");
        }
    }

    #[test]
    fn header_is_clean() {
        let h = received_header(&TraceInfo {
            helo: Some("evil\r\nX-Injected: 1 (foo)"),
            client: "192.0.2.1".parse().unwrap(),
            hostname: "edge.test",
            esmtp: true,
            tls: true,
            authenticated: false,
            id: "0123456789ABCDEF",
            single_recipient: Some("a@b.example"),
        });
        assert!(h.starts_with("Received: from evilX-Injected:1foo ([192.0.2.1])\r\n\tby edge.test (ferrymail) with ESMTPS id 0123456789ABCDEF\r\n\tfor <a@b.example>;\r\n\t"), "{h}");
        assert_eq!(h.matches("\r\n").count(), 4);
        assert!(!h.replace("\r\n", "").contains(['\r', '\n']));
    }
}
