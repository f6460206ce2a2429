//! SMTP replies as values: a code (RFC 5321 §4.2), an enhanced status code (RFC 3463) and
//! text. Every reply the server sends is a named constant here or built from one, so no
//! reply is spelled twice. Writing a reply strips control characters from its text, so a
//! reply can never carry a line break into the stream.

use std::borrow::Cow;
use std::fmt;

/// RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u8, pub u16, pub u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: Option<Status>,
    /// One line per `\n`.
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn new(code: u16, status: Option<Status>, text: &'static str) -> Reply {
        Reply {
            code,
            status,
            text: Cow::Borrowed(text),
        }
    }

    /// The same code and status with other text.
    pub(crate) fn with_text(&self, text: impl Into<String>) -> Reply {
        Reply {
            code: self.code,
            status: self.status,
            text: Cow::Owned(text.into()),
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the reply in wire form: `code-` on every line but the last (RFC 5321
    /// §4.2.1), each line ending CRLF, control characters in the text dropped.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}", self.code).as_bytes());
            if let Some(status) = self.status {
                out.extend_from_slice(format!("{status} ").as_bytes());
            }
            out.extend(line.bytes().filter(|b| !b.is_ascii_control()));
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(String::from_utf8_lossy(&self.to_bytes()).trim_end())
    }
}

const fn st(class: u8, subject: u16, detail: u16) -> Option<Status> {
    Some(Status(class, subject, detail))
}

// Positive.
// RFC 1985 §5 ETRN answers (the text names the node: see `server::etrn`).
pub const ETRN_NONE_WAITING: Reply = Reply::new(251, st(2, 0, 0), "OK, no messages waiting");
pub const ETRN_PENDING: Reply = Reply::new(252, st(2, 0, 0), "OK, pending messages started");
pub const ETRN_STARTED: Reply = Reply::new(253, st(2, 0, 0), "OK, pending messages started");
pub const ETRN_CANNOT_QUEUE: Reply = Reply::new(458, st(4, 3, 0), "Unable to queue messages");
pub const ETRN_NOT_ALLOWED: Reply = Reply::new(459, st(4, 7, 1), "Node not allowed");
pub const ETRN_BAD_NODE: Reply = Reply::new(501, st(5, 5, 4), "ETRN needs a domain, or @domain");

pub const HELP: Reply = Reply::new(214, st(2, 0, 0), "See RFC 5321; ferrymail relays mail");
pub const READY_FOR_TLS: Reply = Reply::new(220, st(2, 0, 0), "Ready to start TLS");
pub const CLOSING: Reply = Reply::new(221, st(2, 0, 0), "Bye");
pub const AUTH_OK: Reply = Reply::new(235, st(2, 7, 0), "Authentication successful");
pub const OK: Reply = Reply::new(250, st(2, 0, 0), "Ok");
pub const SENDER_OK: Reply = Reply::new(250, st(2, 1, 0), "Sender ok");
pub const RECIPIENT_OK: Reply = Reply::new(250, st(2, 1, 5), "Recipient ok");
/// RFC 5321 §3.5.3: VRFY answered without revealing anything.
pub const CANNOT_VRFY: Reply =
    Reply::new(252, st(2, 5, 0), "Cannot verify; send some mail and see");
pub const AUTH_CONTINUE: Reply = Reply::new(334, None, "");
pub const START_DATA: Reply = Reply::new(354, None, "End data with <CR><LF>.<CR><LF>");

// Transient.
pub const TIMEOUT: Reply = Reply::new(421, st(4, 4, 2), "Timeout; closing connection");
pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, st(4, 7, 0), "Too many errors; closing connection");
pub const TOO_BUSY: Reply = Reply::new(421, st(4, 3, 2), "Too many connections; try again later");
pub const SHUTTING_DOWN: Reply = Reply::new(421, st(4, 3, 2), "Shutting down; try again later");
pub const LOCAL_ERROR: Reply = Reply::new(
    451,
    st(4, 3, 0),
    "Local error in processing; try again later",
);
pub const NO_SPACE: Reply = Reply::new(
    452,
    st(4, 3, 1),
    "Insufficient system storage; try again later",
);
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, st(4, 5, 3), "Too many recipients");
pub const TLS_UNAVAILABLE: Reply = Reply::new(454, st(4, 7, 0), "TLS not available");

// Permanent.
pub const SYNTAX_ERROR: Reply = Reply::new(500, st(5, 5, 2), "Syntax error, command unrecognized");
pub const LINE_TOO_LONG: Reply = Reply::new(500, st(5, 5, 2), "Line too long");
pub const PARAM_SYNTAX: Reply = Reply::new(501, st(5, 5, 4), "Syntax error in parameters");
/// RFC 3030 §2: the chunk that follows cannot be skipped without its size.
pub const BAD_CHUNK_SIZE: Reply =
    Reply::new(554, st(5, 5, 4), "BDAT size unreadable; closing connection");
pub const BAD_SENDER_SYNTAX: Reply = Reply::new(501, st(5, 1, 7), "Bad sender address syntax");
pub const BAD_RECIPIENT_SYNTAX: Reply =
    Reply::new(501, st(5, 1, 3), "Bad recipient address syntax");
/// RFC 4954 §4: the client cancelled the exchange with `*`.
pub const SASL_CANCELLED: Reply = Reply::new(501, st(5, 0, 0), "Authentication cancelled");
pub const SASL_BAD_BASE64: Reply = Reply::new(501, st(5, 5, 2), "Cannot decode the response");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, st(5, 5, 1), "Command not implemented");
pub const BAD_SEQUENCE: Reply = Reply::new(503, st(5, 5, 1), "Bad sequence of commands");
pub const PARAM_NOT_IMPLEMENTED: Reply = Reply::new(504, st(5, 5, 4), "Parameter not implemented");
/// RFC 5321 §4.5.3.1.4 and friends: 521 then close, as Postfix does for bare newlines.
pub const BARE_LINE_ENDING: Reply = Reply::new(
    521,
    st(5, 5, 2),
    "Bare CR or LF received; closing connection",
);
/// An `odmr` listener before the turn (RFC 2645 §4).
pub const ODMR_ONLY: Reply = Reply::new(
    502,
    st(5, 5, 1),
    "ODMR: only EHLO, STARTTLS, AUTH, ATRN and QUIT here; mail comes after the turn",
);
pub const AUTH_REQUIRED: Reply = Reply::new(530, st(5, 7, 0), "Authentication required");
pub const TLS_REQUIRED: Reply = Reply::new(530, st(5, 7, 0), "Must issue a STARTTLS command first");
pub const AUTH_FAILED: Reply = Reply::new(535, st(5, 7, 8), "Authentication credentials invalid");
/// RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6: relayed as it is, such a line would be cut
/// or refused further on; the sender can still encode it.
pub const CONTENT_LINE_TOO_LONG: Reply = Reply::new(
    554,
    st(5, 6, 0),
    "Message has a line longer than 998 octets; send it encoded (quoted-printable or base64)",
);
/// XFERRY (docs/xferry.md): content that decodes past any sane ratio, a
/// decompression bomb.
pub const COMPRESSION_BOMB: Reply = Reply::new(
    554,
    st(5, 6, 0),
    "Compressed content expands past any sane ratio",
);
/// XFERRY: content that is not a whole zstd stream.
pub const COMPRESSION_MALFORMED: Reply = Reply::new(
    554,
    st(5, 6, 0),
    "Compressed content is not a whole zstd stream",
);
/// XFERRY: content compressed against earlier messages this connection no longer
/// keeps. Nothing is decoded; the sender sends it again.
pub const UNKNOWN_REFERENCE: Reply = Reply::new(
    451,
    st(4, 6, 0),
    "XZSTD names a message this connection does not keep; send it again",
);
/// XFERRY: resumed content without the hash its key names. What was held is dropped,
/// so the sender's next try sends it whole.
pub const RESUME_MISMATCH: Reply = Reply::new(
    451,
    st(4, 6, 0),
    "Resumed content does not match its key; send it whole",
);
pub const MESSAGE_TOO_BIG: Reply = Reply::new(552, st(5, 3, 4), "Message size exceeds fixed limit");
pub const NEEDS_SMTPUTF8: Reply =
    Reply::new(553, st(5, 6, 7), "Non-ASCII address requires SMTPUTF8");
pub const SYNC_ERROR: Reply = Reply::new(554, st(5, 5, 0), "Protocol synchronization error");
pub const RELAY_DENIED: Reply = Reply::new(554, st(5, 7, 1), "Relay access denied");
pub const LOOP_DETECTED: Reply =
    Reply::new(554, st(5, 4, 6), "Too many Received headers; mail loop?");
/// RFC 5321 §4.1.1.11: MAIL/RCPT parameters not recognised.
pub const UNKNOWN_PARAMETER: Reply = Reply::new(
    555,
    st(5, 5, 4),
    "Parameter not recognized or not implemented",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(OK.to_bytes(), b"250 2.0.0 Ok\r\n");
        assert_eq!(
            START_DATA.to_bytes(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        let ehlo = OK.with_text("edge.test\nPIPELINING\nSIZE 1000");
        assert_eq!(
            ehlo.to_bytes(),
            b"250-2.0.0 edge.test\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 1000\r\n"
        );
        let hostile = SYNTAX_ERROR.with_text("x\r\0y");
        assert_eq!(hostile.to_bytes(), b"500 5.5.2 xy\r\n");
        assert!(
            TOO_MANY_RECIPIENTS.is_transient() && RELAY_DENIED.is_permanent() && OK.is_positive()
        );
    }
}
