//! Delivery status notifications (RFC 3464 multipart/report; RFC 3461 for what the sender
//! asked for). `write_to` writes the whole notification as CRLF lines: a human
//! explanation, the machine-readable `message/delivery-status`, and the original's
//! headers (RET=HDRS, the default) or the whole original (RET=FULL), streamed from a
//! reader so a large original is never held in memory. Never one for the null sender (RFC 5321
//! §4.5.5, no bounce loops); NOTIFY=NEVER silences a recipient, SUCCESS and DELAY must be
//! asked for, FAILURE is the default. Text from upstreams is stripped of control
//! characters and kept under the 998-octet line limit. The MIME is written directly: its
//! shape is fixed, and every line stays under our control.

use std::io::{self, Read, Write};

use crate::smtp::{NotifyOn, Ret};
use crate::spool::{Envelope, Recipient};

/// RFC 3464 §2.3.3 Action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Passed to an upstream that does not offer DSN (RFC 3461 §6.2.2): we cannot
    /// tell the sender more than that it left us.
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    /// The NOTIFY event that asks for this action (RFC 3461 §4.1).
    fn notify_on(self) -> NotifyOn {
        match self {
            Action::Failed => NotifyOn::Failure,
            Action::Delayed => NotifyOn::Delay,
            Action::Delivered | Action::Relayed => NotifyOn::Success,
        }
    }
}

/// One recipient's line in a report.
#[derive(Clone, Debug)]
pub struct Reported<'a> {
    pub recipient: &'a Recipient,
    pub action: Action,
    /// RFC 3463, e.g. `5.1.1`.
    pub status: &'a str,
    pub remote_mta: Option<&'a str>,
    /// The upstream's reply, or our reason.
    pub diagnostic: &'a str,
}

/// One recipient's line in a notice to be sent (`queue::notices`).
#[derive(Clone, Debug)]
pub struct Line {
    pub position: usize,
    pub action: Action,
    pub status: String,
    pub remote_mta: Option<String>,
    pub diagnostic: String,
}

/// What of the original message a notice carries.
pub enum Original<'a> {
    /// Nothing (its file is damaged).
    Nothing,
    /// Its header section (RET=HDRS, the default), read up to the blank line.
    Headers(&'a mut dyn Read),
    /// All of it (RET=FULL); `eight_bit` when it holds octets above 127.
    Full(&'a mut dyn Read, bool),
}

/// Whether the sender wants to hear about `action` for `recipient`.
pub fn wanted(envelope: &Envelope, recipient: &Recipient, action: Action) -> bool {
    if envelope.sender.is_null() {
        return false;
    }
    match &recipient.notify {
        // RFC 3461 §4.1: without NOTIFY, FAILURE or FAILURE,DELAY at our discretion; delay
        // notices are then governed by `retry.warn_after` (zero turns them off).
        None => matches!(action, Action::Failed | Action::Delayed),
        Some(notify) => notify.wants(action.notify_on()),
    }
}

/// Longest line we write; RFC 5322 §2.1.1 allows 998.
const MAX_LINE: usize = 900;

/// The notification as a complete message, in memory (tests and small originals).
pub fn build(
    hostname: &str,
    envelope: &Envelope,
    reports: &[Reported<'_>],
    original: &[u8],
    now: i64,
    id: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut reader = original;
    let original = if envelope.ret == Some(Ret::Full) {
        Original::Full(&mut reader, original.iter().any(|b| *b >= 0x80))
    } else {
        Original::Headers(&mut reader)
    };
    write_to(
        &mut out,
        hostname,
        envelope,
        &envelope.sender.to_string(),
        reports,
        original,
        now,
        id,
    )
    .expect("writing to memory");
    out
}

/// Writes the notification about the message of `envelope`, addressed to `to` (its
/// sender, or the admin address for a double bounce), to `out`; `now` is Unix seconds;
/// `id` makes the Message-ID unique.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_to(
    out: &mut dyn Write,
    hostname: &str,
    envelope: &Envelope,
    to: &str,
    reports: &[Reported<'_>],
    original: Original<'_>,
    now: i64,
    id: &str,
) -> io::Result<()> {
    let boundary = format!("{id}.{now}/{hostname}");
    let date = crate::smtp::date::at(now);
    let kind = NoticeKind::of(envelope, reports);
    let mut m = String::new();
    let mut header = |name: &str, value: &str| m.push_str(&format!("{name}: {}\r\n", clean(value)));
    header(
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{hostname}>"),
    );
    header("To", &format!("<{to}>"));
    header("Subject", kind.subject());
    header("Date", &date);
    header("Message-ID", &format!("<{id}.dsn@{hostname}>"));
    header("Auto-Submitted", "auto-replied");
    header("MIME-Version", "1.0");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    human_part(&mut m, &boundary, hostname, kind, reports);
    status_part(&mut m, &boundary, hostname, envelope, reports, &date);
    let (kind, eight_bit) = match &original {
        Original::Nothing => {
            out.write_all(m.as_bytes())?;
            return out.write_all(format!("--{boundary}--\r\n").as_bytes());
        }
        Original::Headers(_) => ("text/rfc822-headers", false),
        Original::Full(_, eight_bit) => ("message/rfc822", *eight_bit),
    };
    m.push_str(&format!("--{boundary}\r\nContent-Type: {kind}\r\n"));
    if eight_bit {
        m.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    m.push_str("\r\n");
    out.write_all(m.as_bytes())?;
    let ended = match original {
        Original::Nothing => unreachable!("handled above"),
        Original::Headers(r) => copy_headers(r, out)?,
        Original::Full(r, _) => copy_all(r, out)?,
    };
    if !ended {
        out.write_all(b"\r\n")?;
    }
    out.write_all(format!("\r\n--{boundary}--\r\n").as_bytes())
}

/// What a notice reports, which gives its subject, its opening words and its name in
/// the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// The failed message was itself a notice (null sender).
    DoubleBounce,
    Failed,
    Delivered,
    Delayed,
}

impl NoticeKind {
    pub fn of(envelope: &Envelope, reports: &[Reported<'_>]) -> NoticeKind {
        if reports.iter().any(|r| r.action == Action::Failed) {
            if envelope.sender.is_null() {
                NoticeKind::DoubleBounce
            } else {
                NoticeKind::Failed
            }
        } else if reports
            .iter()
            .all(|r| matches!(r.action, Action::Delivered | Action::Relayed))
        {
            NoticeKind::Delivered
        } else {
            NoticeKind::Delayed
        }
    }

    /// The name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::DoubleBounce => "double-bounce",
            NoticeKind::Failed => "failure",
            NoticeKind::Delivered => "success",
            NoticeKind::Delayed => "delay",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            NoticeKind::DoubleBounce => "Undeliverable Delivery Status Notification",
            NoticeKind::Failed => "Undelivered Mail Returned to Sender",
            NoticeKind::Delivered => "Successful Mail Delivery Report",
            NoticeKind::Delayed => "Delayed Mail (still being retried)",
        }
    }

    fn opening(self) -> &'static str {
        match self {
            NoticeKind::DoubleBounce => {
                "A delivery status notification from this mail system could not be\r\ndelivered to its recipient below, and it has no sender to return to.\r\nIt is attached below.\r\n\r\n"
            }
            NoticeKind::Failed => {
                "Your message could not be delivered to one or more recipients.\r\nIt is attached below.\r\n\r\n"
            }
            NoticeKind::Delivered => {
                "Your message was delivered to the recipients below, as you asked.\r\n\r\n"
            }
            NoticeKind::Delayed => {
                "Your message has not been delivered yet. It is still being retried;\r\nyou need not send it again.\r\n\r\n"
            }
        }
    }
}

/// The first part of the report, for people (RFC 3464 §2): what happened, a line per
/// recipient.
fn human_part(
    m: &mut String,
    boundary: &str,
    hostname: &str,
    kind: NoticeKind,
    reports: &[Reported<'_>],
) {
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is the mail system at host {}.\r\n\r\n",
        clean(hostname)
    ));
    m.push_str(kind.opening());
    for r in reports {
        let line = format!(
            "<{}>: {} ({})",
            r.recipient.address,
            r.action.as_str(),
            r.diagnostic
        );
        m.push_str(&wrap(&clean(&line)));
    }
    m.push_str("\r\n");
}

/// The second part, for programs (RFC 3464 §2.2, §2.3): the message's fields, then each
/// recipient's.
fn status_part(
    m: &mut String,
    boundary: &str,
    hostname: &str,
    envelope: &Envelope,
    reports: &[Reported<'_>],
    date: &str,
) {
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {}\r\n", clean(hostname)));
    if let Some(envid) = &envelope.envid {
        m.push_str(&format!("Original-Envelope-Id: {}\r\n", clean(envid)));
    }
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        crate::smtp::date::at(envelope.received_at)
    ));
    for r in reports {
        m.push_str("\r\n");
        if let Some(orcpt) = &r.recipient.orcpt {
            m.push_str(&format!("Original-Recipient: {}\r\n", clean(orcpt)));
        }
        m.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            clean(&r.recipient.address.to_string())
        ));
        m.push_str(&format!("Action: {}\r\n", r.action.as_str()));
        m.push_str(&format!("Status: {}\r\n", clean(r.status)));
        if let Some(mta) = r.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {}\r\n", clean(mta)));
        }
        m.push_str(&wrap(&format!(
            "Diagnostic-Code: smtp; {}",
            clean(r.diagnostic)
        )));
        m.push_str(&format!("Last-Attempt-Date: {date}\r\n"));
    }
    m.push_str("\r\n");
}

/// Copies `r` to `out`; returns whether it ended with CRLF.
fn copy_all(r: &mut dyn Read, out: &mut dyn Write) -> io::Result<bool> {
    let mut piece = vec![0u8; 64 << 10];
    let mut last = [0u8; 2];
    loop {
        let n = r.read(&mut piece)?;
        if n == 0 {
            return Ok(&last == b"\r\n");
        }
        out.write_all(&piece[..n])?;
        if n >= 2 {
            last.copy_from_slice(&piece[n - 2..n]);
        } else {
            last = [last[1], piece[0]];
        }
    }
}

/// Copies the header section of `r` (up to and including the CRLF before the blank
/// line, or all of it when there is no blank line); returns whether it ended with CRLF.
/// A CR at the end of a piece is held back until the next shows whether it begins the
/// blank line.
fn copy_headers(r: &mut dyn Read, out: &mut dyn Write) -> io::Result<bool> {
    let mut piece = vec![0u8; 16 << 10];
    // How much of CRLF CRLF the bytes so far end with.
    let mut matched = 0;
    let mut held_cr = false;
    let mut last = [0u8; 2];
    loop {
        let n = r.read(&mut piece)?;
        if n == 0 {
            if held_cr {
                out.write_all(b"\r")?;
            }
            return Ok(&last == b"\r\n");
        }
        for (i, &b) in piece[..n].iter().enumerate() {
            matched = match (matched, b) {
                (0 | 2, b'\r') | (1 | 3, b'\n') => matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if matched == 4 {
                // The blank line's CR is piece[i - 1], or the CR held back (dropped).
                if i >= 1 {
                    if held_cr {
                        out.write_all(b"\r")?;
                    }
                    out.write_all(&piece[..i - 1])?;
                }
                return Ok(true);
            }
        }
        if held_cr {
            out.write_all(b"\r")?;
        }
        held_cr = piece[n - 1] == b'\r';
        let end = if held_cr { n - 1 } else { n };
        out.write_all(&piece[..end])?;
        for &b in &piece[..n] {
            last = [last[1], b];
        }
    }
}

/// Control characters out, so no text from an upstream can end a line or a header.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Folds a long field at spaces, continuation lines indented (RFC 5322 §2.2.3); a word
/// longer than a line is cut.
fn wrap(line: &str) -> String {
    let mut out = String::new();
    let mut current = String::new();
    for word in line.split(' ') {
        let word: String = word.chars().take(MAX_LINE).collect();
        if !current.is_empty() && current.len() + 1 + word.len() > 76 {
            out.push_str(&current);
            out.push_str("\r\n");
            current = String::from(" ");
        } else if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&word);
    }
    out.push_str(&current);
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Origin;

    fn envelope(sender: &str, ret: Option<Ret>) -> Envelope {
        Envelope {
            received_at: 1_800_000_000,
            envid: Some("QQ314159".into()),
            ret,
            ..Envelope::new(
                crate::smtp::ReversePath::parse(sender).unwrap(),
                vec![],
                Origin::default(),
            )
        }
    }

    #[test]
    fn who_hears_about_what() {
        let e = envelope("alice@edge.test", None);
        let plain = Recipient::parse("b@x.example").unwrap();
        let never = Recipient {
            notify: crate::smtp::Notify::parse("NEVER"),
            ..Recipient::parse("c@x.example").unwrap()
        };
        let all = Recipient {
            notify: crate::smtp::Notify::parse("SUCCESS,DELAY,FAILURE"),
            ..Recipient::parse("d@x.example").unwrap()
        };
        assert!(wanted(&e, &plain, Action::Failed));
        assert!(
            wanted(&e, &plain, Action::Delayed),
            "no NOTIFY: failure and delay"
        );
        assert!(!wanted(&e, &plain, Action::Delivered));
        assert!(!wanted(&e, &never, Action::Failed));
        assert!(wanted(&e, &all, Action::Delivered) && wanted(&e, &all, Action::Delayed));
        assert!(
            !wanted(&envelope("", None), &plain, Action::Failed),
            "never to the null sender"
        );
    }

    #[test]
    fn a_failure_report() {
        let e = envelope("alice@edge.test", None);
        let r1 = Recipient {
            orcpt: Some("rfc822;bob@x.example".into()),
            ..Recipient::parse("bob@x.example").unwrap()
        };
        let hostile = format!(
            "550 5.1.1 no such user\r\nInjected: yes {}",
            "z".repeat(3000)
        );
        let reports = [Reported {
            recipient: &r1,
            action: Action::Failed,
            status: "5.1.1",
            remote_mta: Some("mx.x.example"),
            diagnostic: &hostile,
        }];
        let original = b"Subject: hello\r\nFrom: alice@edge.test\r\n\r\nsecret body\r\n";
        let dsn = build("edge.test", &e, &reports, original, 1_800_000_100, "ID1");
        let text = String::from_utf8(dsn.clone()).unwrap();
        for want in [
            "To: <alice@edge.test>\r\n",
            "Subject: Undelivered Mail Returned to Sender\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "report-type=delivery-status",
            "Reporting-MTA: dns; edge.test\r\n",
            "Original-Envelope-Id: QQ314159\r\n",
            "Original-Recipient: rfc822;bob@x.example\r\n",
            "Final-Recipient: rfc822; bob@x.example\r\n",
            "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.x.example\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hello\r\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("secret body"),
            "RET=HDRS (default) returns headers only"
        );
        assert!(
            !text.contains("\r\nInjected:"),
            "upstream text cannot start a header"
        );
        assert!(
            text.lines().all(|l| l.len() <= 998),
            "a line over 998 octets"
        );
        assert!(!text.replace("\r\n", "").contains('\n'), "bare LF");
        assert!(text.ends_with("--\r\n"));
        // An independent MIME parser sees the RFC 3464 structure.
        let parsed = mailparse::parse_mail(&dsn).unwrap();
        assert_eq!(parsed.ctype.mimetype, "multipart/report");
        assert_eq!(
            parsed.ctype.params.get("report-type").map(String::as_str),
            Some("delivery-status")
        );
        let kinds: Vec<&str> = parsed
            .subparts
            .iter()
            .map(|p| p.ctype.mimetype.as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        let full = build(
            "edge.test",
            &envelope("alice@edge.test", Some(Ret::Full)),
            &reports,
            original,
            1_800_000_100,
            "ID2",
        );
        assert!(String::from_utf8_lossy(&full).contains("Content-Type: message/rfc822\r\n\r\nSubject: hello\r\nFrom: alice@edge.test\r\n\r\nsecret body\r\n"));
    }
}
