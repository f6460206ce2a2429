//! Local injection, the `sendmail` personality's work: read a message from stdin, decide
//! the envelope (`-f`, arguments, `-t` headers), fix up headers (drop Bcc, add From, Date,
//! Message-ID when missing), canonicalise to CRLF, and write it durably to the maildrop.
//! Nothing is written unless everything checks out; memory is bounded by the header
//! section (`MAX_HEADER_SECTION`) whatever the message size.

use std::io::{BufRead, Read};

use crate::exit::{self, Failure};
use crate::smtp::canon::CrlfCanon;
use crate::smtp::{Mailbox, ReversePath};
use crate::smtp::{Notify, Ret};
use crate::spool::maildrop::{DropEnvelope, DropWriter, MAX_DROP_RECIPIENTS};
use crate::spool::{Fs, Layout, Recipient, now_unix};

/// Bound on the header section read into memory.
pub const MAX_HEADER_SECTION: usize = 1 << 20;
/// Body is streamed in pieces of at most this many bytes.
const PIECE: u64 = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InjectOptions {
    /// `-f`; `None` means the invoking user at our hostname.
    pub sender: Option<String>,
    /// `-F`: display name for an added `From:`.
    pub full_name: Option<String>,
    /// `-t`: recipients also from To, Cc and Bcc.
    pub extract_recipients: bool,
    /// `-i` / `-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    pub recipients: Vec<String>,
    /// `-N`: RFC 3461 NOTIFY for every recipient.
    pub notify: Option<Notify>,
    /// `-R`: RFC 3461 RET.
    pub ret: Option<Ret>,
    /// `-V`: RFC 3461 ENVID.
    pub envid: Option<String>,
}

/// What injection needs to know about this system.
pub struct Site<'a> {
    pub hostname: &'a str,
    pub login: &'a str,
    pub max_message_size: u64,
    pub fs: &'a dyn Fs,
    pub layout: &'a Layout,
}

/// Injects one message; returns the maildrop file name once it is durable.
pub fn inject(
    input: &mut dyn BufRead,
    opts: &InjectOptions,
    site: &Site<'_>,
) -> Result<String, Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    for (what, value) in [
        ("-f", &opts.sender),
        ("-F", &opts.full_name),
        ("-V", &opts.envid),
    ] {
        if value.as_deref().is_some_and(has_control) {
            return Err(usage(format!(
                "{what}: control characters (CR, LF, NUL…) are not allowed"
            )));
        }
    }
    let sender = match &opts.sender {
        Some(s) => qualify_sender(s, site.hostname).map_err(|e| usage(format!("-f {s:?}: {e}")))?,
        None => qualify(site.login, site.hostname)
            .map(ReversePath::Mailbox)
            .map_err(|e| usage(format!("the sender {}@{}: {e}", site.login, site.hostname)))?,
    };
    let mut recipients = argument_recipients(&opts.recipients, site.hostname)?;
    let mut head = read_header_section(input, opts.ignore_dots)?;
    if opts.extract_recipients {
        recipients.extend(header_recipients(&head, site.hostname)?);
    }
    head.fields.retain(|f| !f.is_any(&["bcc", "resent-bcc"]));
    dedupe(&mut recipients);
    if recipients.is_empty() {
        return Err(usage(
            "no recipients: name them as arguments, or use -t".into(),
        ));
    }
    if recipients.len() > MAX_DROP_RECIPIENTS {
        return Err(usage(format!("more than {MAX_DROP_RECIPIENTS} recipients")));
    }
    let added = added_headers(
        &head,
        &sender.to_string(),
        opts.full_name.as_deref(),
        site.hostname,
    );
    let envelope = DropEnvelope {
        sender,
        recipients: recipients
            .into_iter()
            .map(|address| Recipient {
                address,
                notify: opts.notify.clone(),
                orcpt: None,
            })
            .collect(),
        envid: opts.envid.clone(),
        ret: opts.ret,
        submitted_at: now_unix(),
    };
    let drop = DropWriter::create(site.fs, site.layout, &envelope).map_err(maildrop_error)?;
    let mut out = Canonical::new(drop, site.max_message_size);
    for field in &head.fields {
        out.write(&field.raw)?;
    }
    out.write(added.as_bytes())?;
    out.write(b"\r\n")?;
    if let Some(first) = &head.first_body_line {
        out.write(first)?;
    }
    if !head.ended {
        let at_line_start = head
            .first_body_line
            .as_ref()
            .is_none_or(|l| l.ends_with(b"\n"));
        copy_body(input, at_line_start, opts.ignore_dots, &mut out)?;
    }
    out.finish()
}

/// The recipients named as arguments, each an RFC 5322 address list.
fn argument_recipients(args: &[String], hostname: &str) -> Result<Vec<Mailbox>, Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    let mut recipients = Vec::new();
    for arg in args {
        if has_control(arg) {
            return Err(usage(format!(
                "recipient {arg:?}: control characters are not allowed"
            )));
        }
        for addr in parse_address_list(arg).map_err(|e| usage(format!("recipient {arg:?}: {e}")))? {
            let mailbox =
                qualify(&addr, hostname).map_err(|e| usage(format!("recipient {addr:?}: {e}")))?;
            recipients.push(mailbox);
        }
    }
    Ok(recipients)
}

/// `-t`: the recipients in To, Cc and Bcc.
fn header_recipients(head: &HeaderSection, hostname: &str) -> Result<Vec<Mailbox>, Failure> {
    let data = |m: String| Failure::new(exit::DATAERR, m);
    let mut recipients = Vec::new();
    for field in head
        .fields
        .iter()
        .filter(|f| f.is_any(&["to", "cc", "bcc"]))
    {
        let value = field.value();
        for addr in
            parse_address_list(&value).map_err(|e| data(format!("{} header: {e}", field.name())))?
        {
            let mailbox = qualify(&addr, hostname)
                .map_err(|e| data(format!("{} header: {addr:?}: {e}", field.name())))?;
            recipients.push(mailbox);
        }
    }
    Ok(recipients)
}

/// The rest of the body from `input`, a line at a time (a piece at a time for long
/// lines), up to the end or, unless `ignore_dots`, a line with a single dot.
fn copy_body(
    input: &mut dyn BufRead,
    mut at_line_start: bool,
    ignore_dots: bool,
    out: &mut Canonical<'_>,
) -> Result<(), Failure> {
    let mut piece = Vec::with_capacity(PIECE as usize);
    loop {
        piece.clear();
        let n = input
            .take(PIECE)
            .read_until(b'\n', &mut piece)
            .map_err(|e| Failure::new(exit::IOERR, format!("reading the message: {e}")))?;
        if n == 0 || (at_line_start && !ignore_dots && is_lone_dot(&piece)) {
            return Ok(());
        }
        at_line_start = piece.ends_with(b"\n");
        out.write(&piece)?;
    }
}

fn maildrop_error(e: std::io::Error) -> Failure {
    Failure::new(exit::CANTCREAT, format!("writing to the maildrop: {e}"))
}

/// The drop's content as it is written: CRLF line ends (RFC 5322 §2.3), no NUL, at most
/// the size limit.
struct Canonical<'a> {
    drop: DropWriter<'a>,
    canon: CrlfCanon,
    out: Vec<u8>,
    size: u64,
    max: u64,
}

impl<'a> Canonical<'a> {
    fn new(drop: DropWriter<'a>, max: u64) -> Canonical<'a> {
        Canonical {
            drop,
            canon: CrlfCanon::new(),
            out: Vec::with_capacity(PIECE as usize * 2),
            size: 0,
            max,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let data = |m: String| Failure::new(exit::DATAERR, m);
        self.out.clear();
        self.canon
            .push(bytes, &mut self.out)
            .map_err(|_| data("the message contains a NUL byte".into()))?;
        self.size += self.out.len() as u64;
        if self.size > self.max {
            return Err(data(format!(
                "message larger than the {}-byte limit (accept.max_message_size)",
                self.max
            )));
        }
        self.drop.write_all(&self.out).map_err(maildrop_error)
    }

    /// Ends the content and makes the drop durable; returns its name.
    fn finish(mut self) -> Result<String, Failure> {
        self.out.clear();
        self.canon.finish(&mut self.out);
        self.drop.write_all(&self.out).map_err(maildrop_error)?;
        self.drop.finish().map_err(maildrop_error)
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn is_lone_dot(line: &[u8]) -> bool {
    matches!(line, b".\n" | b".\r\n")
}

/// `-f` value: empty or `<>` is the null sender; a bare name gets our hostname.
fn qualify_sender(s: &str, hostname: &str) -> Result<ReversePath, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(s);
    if inner.is_empty() {
        return Ok(ReversePath::Null);
    }
    qualify(inner, hostname).map(ReversePath::Mailbox)
}

/// A bare local name gets `@hostname`; the result must be a valid mailbox.
fn qualify(addr: &str, hostname: &str) -> Result<Mailbox, String> {
    let full = if addr.contains('@') {
        addr.to_owned()
    } else {
        format!("{addr}@{hostname}")
    };
    Mailbox::parse(&full).map_err(|e| e.to_string())
}

/// Addresses in an RFC 5322 address list (`a@b, "N" <c@d>, group: e@f;`). A bare local
/// name (`root`, `Cron <root>`), which RFC 5322 does not allow but every sendmail caller
/// uses, is taken as it is and qualified later.
fn parse_address_list(text: &str) -> Result<Vec<String>, String> {
    let list = match mailparse::addrparse(text) {
        Ok(list) => list,
        Err(e) => return bare_names(text).ok_or_else(|| e.to_string()),
    };
    let mut out = Vec::new();
    for item in list.iter() {
        match item {
            mailparse::MailAddr::Single(info) => out.push(info.addr.clone()),
            mailparse::MailAddr::Group(group) => {
                out.extend(group.addrs.iter().map(|i| i.addr.clone()))
            }
        }
    }
    Ok(out)
}

/// A list of plain items separated by commas, each `addr` or `phrase <addr>`, where
/// `addr` may lack a domain; `None` when an item is anything else (quotes, groups).
fn bare_names(text: &str) -> Option<Vec<String>> {
    if text.contains(['"', ':', ';', '(']) {
        return None;
    }
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let addr = match (item.find('<'), item.rfind('>')) {
            (Some(open), Some(close)) if open < close && close == item.len() - 1 => {
                &item[open + 1..close]
            }
            (None, None) => item,
            _ => return None,
        };
        let addr = addr.trim();
        if addr.is_empty() || addr.contains(['<', '>', ' ', '\t']) {
            return None;
        }
        out.push(addr.to_owned());
    }
    Some(out)
}

fn dedupe(list: &mut Vec<Mailbox>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|a| seen.insert(a.to_string().to_lowercase()));
}

/// One header field as read: its raw lines, endings included.
struct Field {
    raw: Vec<u8>,
}

impl Field {
    fn name(&self) -> String {
        let colon = self.raw.iter().position(|b| *b == b':').unwrap_or(0);
        String::from_utf8_lossy(&self.raw[..colon])
            .trim()
            .to_owned()
    }

    fn is_any(&self, names: &[&str]) -> bool {
        let name = self.name();
        names.iter().any(|n| n.eq_ignore_ascii_case(&name))
    }

    /// The unfolded value (RFC 5322 §2.2.3).
    fn value(&self) -> String {
        let colon = self
            .raw
            .iter()
            .position(|b| *b == b':')
            .map_or(0, |c| c + 1);
        let text = String::from_utf8_lossy(&self.raw[colon..]);
        text.replace("\r\n", "").replace('\n', "").trim().to_owned()
    }
}

struct HeaderSection {
    fields: Vec<Field>,
    /// A line that ended the header section without being blank (no separator line).
    first_body_line: Option<Vec<u8>>,
    /// Input ended (EOF or lone dot) within the header section.
    ended: bool,
}

fn read_header_section(
    input: &mut dyn BufRead,
    ignore_dots: bool,
) -> Result<HeaderSection, Failure> {
    let mut head = HeaderSection {
        fields: Vec::new(),
        first_body_line: None,
        ended: false,
    };
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let n = input
            .take((MAX_HEADER_SECTION - total) as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::new(exit::IOERR, format!("reading the message: {e}")))?;
        total += n;
        if total > MAX_HEADER_SECTION {
            return Err(Failure::new(
                exit::DATAERR,
                format!("header section larger than {MAX_HEADER_SECTION} bytes"),
            ));
        }
        if n == 0 || (!ignore_dots && is_lone_dot(&line)) {
            head.ended = true;
            return Ok(head);
        }
        if line == b"\n" || line == b"\r\n" {
            return Ok(head);
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match head.fields.last_mut() {
            Some(field) if continuation => field.raw.extend_from_slice(&line),
            _ if is_field_start(&line) => head.fields.push(Field { raw: line }),
            _ => {
                head.first_body_line = Some(line);
                return Ok(head);
            }
        }
    }
}

/// `name:` where name is printable ASCII without colon or space (RFC 5322 §2.2).
fn is_field_start(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return false;
    };
    colon > 0 && line[..colon].iter().all(|b| (33..=126).contains(b))
}

fn added_headers(
    head: &HeaderSection,
    sender: &str,
    full_name: Option<&str>,
    hostname: &str,
) -> String {
    let has = |name: &str| head.fields.iter().any(|f| f.is_any(&[name]));
    let mut out = String::new();
    if !has("from") {
        let addr = if sender.is_empty() {
            format!("MAILER-DAEMON@{hostname}")
        } else {
            sender.to_owned()
        };
        match full_name {
            Some(name) if !name.is_empty() => {
                let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("From: \"{quoted}\" <{addr}>\r\n"));
            }
            _ => out.push_str(&format!("From: {addr}\r\n")),
        }
    }
    if !has("date") {
        let date = crate::smtp::date::now();
        out.push_str(&format!("Date: {date}\r\n"));
    }
    if !has("message-id") {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the OS random source works");
        out.push_str(&format!(
            "Message-ID: <{}.{:016x}@{hostname}>\r\n",
            now_unix(),
            u64::from_le_bytes(random)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        assert!(is_field_start(b"To: a@b\n"));
        assert!(!is_field_start(b"not a header\n"));
        assert!(!is_field_start(b": empty name\n"));
        let f = Field {
            raw: b"Bcc: a@b,\r\n  c@d\r\n".to_vec(),
        };
        assert!(f.is_any(&["BCC"]));
        assert_eq!(f.value(), "a@b,  c@d");
        assert_eq!(
            parse_address_list("\"N\" <a@b.c>, d@e.f").unwrap(),
            vec!["a@b.c", "d@e.f"]
        );
        assert_eq!(
            qualify("bob", "h.example").unwrap().to_string(),
            "bob@h.example"
        );
        assert_eq!(parse_address_list("root").unwrap(), vec!["root"]);
        assert_eq!(
            parse_address_list("root, Ops <ops>, a@b.c").unwrap(),
            vec!["root", "ops", "a@b.c"]
        );
        assert!(parse_address_list("\"x\" <bad").is_err());
        assert_eq!(qualify_sender("<>", "h").unwrap(), ReversePath::Null);
    }
}
