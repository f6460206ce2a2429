//! Trace headers (RFC 5321 §4.4): the `Received:` line we prepend, with the protocol
//! named per RFC 3848, and a scan of a message's header section, fed chunk by chunk:
//! `Received:` fields for loop detection, and the `Date:`/`Message-ID:` fields that a
//! submission may lack. Nothing a client sent goes into our header unfiltered: the EHLO
//! name is reduced to host-name characters.

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
    let date = crate::smtp::date::now();
    let for_clause = t
        .single_recipient
        .map(|r| format!("\r\n\tfor <{r}>"))
        .unwrap_or_default();
    format!(
        "Received: from {helo} ([{}])\r\n\tby {} (ferrymail) with {protocol} id {}{for_clause};\r\n\t{date}\r\n",
        t.client, t.hostname, t.id
    )
}

/// Watches the header section of content fed in chunks: counts `Received:` fields, notes
/// `Date:` and `Message-ID:`, and finds where the section ends (the empty line).
#[derive(Debug)]
pub struct HeaderScan {
    in_headers: bool,
    /// The start of the current line (up to 11 bytes, enough for `message-id:`).
    line_start: Vec<u8>,
    at_line_start: bool,
    received: usize,
    has_date: bool,
    has_message_id: bool,
}

impl Default for HeaderScan {
    fn default() -> Self {
        HeaderScan {
            in_headers: true,
            line_start: Vec::with_capacity(11),
            at_line_start: true,
            received: 0,
            has_date: false,
            has_message_id: false,
        }
    }
}

impl HeaderScan {
    /// Feeds content; returns the offset in `bytes` where the empty line that ends the
    /// header section begins, when it is in this chunk.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if !self.in_headers {
                return None;
            }
            if self.at_line_start {
                if b == b'\r' || b == b'\n' {
                    self.in_headers = false;
                    return Some(i);
                }
                self.at_line_start = false;
                self.line_start.clear();
            }
            if b == b'\n' {
                self.at_line_start = true;
                continue;
            }
            if self.line_start.len() < 11 {
                self.line_start.push(b);
                self.note_field();
            }
        }
        None
    }

    fn note_field(&mut self) {
        let start = self.line_start.as_slice();
        if start.eq_ignore_ascii_case(b"received:") {
            self.received += 1;
        } else if start.eq_ignore_ascii_case(b"date:") {
            self.has_date = true;
        } else if start.eq_ignore_ascii_case(b"message-id:") {
            self.has_message_id = true;
        }
    }

    pub fn received(&self) -> usize {
        self.received
    }

    /// The header section has ended (an empty line was seen).
    pub fn ended(&self) -> bool {
        !self.in_headers
    }

    /// The `Date:` and `Message-ID:` fields a submission lacks (RFC 6409 §8.2, §8.3).
    pub(crate) fn missing_fields(&self, id: &str, hostname: &str) -> String {
        let mut out = String::new();
        if !self.has_date {
            let date = crate::smtp::date::now();
            out.push_str(&format!("Date: {date}\r\n"));
        }
        if !self.has_message_id {
            out.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_only_the_header_section_at_any_chunking() {
        let head = b"Received: a\r\nRECEIVED: b\r\n\tcontinued received: no\r\nX-Received: no\r\nDate: x\r\n";
        let mut msg = head.to_vec();
        msg.extend_from_slice(b"\r\nReceived: in the body\r\nMessage-ID: <in body>\r\n");
        for step in 1..msg.len() {
            let mut c = HeaderScan::default();
            let mut end = None;
            for (n, chunk) in msg.chunks(step).enumerate() {
                if let Some(at) = c.feed(chunk) {
                    end = Some(n * step + at);
                }
            }
            assert_eq!(c.received(), 2, "step {step}");
            assert_eq!(end, Some(head.len()), "step {step}");
            let missing = c.missing_fields("ID", "h.example");
            assert!(
                missing.starts_with("Message-ID: <ID@h.example>") && !missing.contains("Date:"),
                "{missing}"
            );
        }
        let mut none = HeaderScan::default();
        assert_eq!(none.feed(b"Subject: only headers\r\n"), None);
        assert!(!none.ended());
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
