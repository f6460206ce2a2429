//! SMTP commands (RFC 5321 §4.1) and their ESMTP parameters: SIZE (RFC 1870), BODY (RFC
//! 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET/ENVID/NOTIFY/ORCPT (RFC 3461), AUTH= (RFC
//! 4954), ETRN (RFC 1985). Input is one framed line without its CRLF. Parsing is strict:
//! paths need angle brackets, parameters may appear once, unknown ones are refused, and
//! xtext values never decode to control characters.

use super::address::{AddressError, Mailbox, ReversePath};
use super::domain::is_domain;
use super::params::{BodyType, Notify, Ret};
use crate::ferry::{self, ResumeKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    /// RFC 3030 §2: `BDAT <size> [LAST]`.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy(String),
    Expn(String),
    StartTls,
    /// RFC 4954 §4: mechanism and the optional initial response (base64, or `=`).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// RFC 1985 §5: `domain`, `@domain` or `#queue`, as given.
    Etrn(String),
    /// RFC 2645 §4.2: the domains asked for (none: all the user's), lower case.
    Atrn(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    pub path: ReversePath,
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    /// RFC 4954 §5 AUTH=: `None` when absent; `Some(None)` for `AUTH=<>`.
    pub auth: Option<Option<String>>,
    /// XFERRY's `XZSTD[=ID,…]`: the BDAT content is zstd-compressed, against the named
    /// earlier messages of this connection (docs/xferry.md).
    pub zstd: Option<Vec<String>>,
    /// XFERRY's `XRESUME=key`: the content may be resumed under this key.
    pub resume: Option<ResumeKey>,
}

impl MailFrom {
    /// XZSTD or XRESUME: only for a listener that offers XFERRY, and only with BDAT.
    pub(crate) fn uses_xferry(&self) -> bool {
        self.zstd.is_some() || self.resume.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    pub mailbox: Mailbox,
    pub notify: Option<Notify>,
    /// RFC 3461 §4.2: `addr-type;address`, xtext-decoded.
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command unrecognized")]
    Unknown,
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    #[error("bad parameter {0}")]
    BadParameter(String),
    #[error("unsupported parameter {0}")]
    UnknownParameter(String),
    /// A BDAT whose chunk size cannot be read: the chunk's bytes follow, and nothing
    /// tells where they end, so the connection must close (RFC 3030 §2).
    #[error("BDAT size unreadable")]
    BadChunkSize,
}

impl CommandError {
    /// The reply a session sends for this error.
    pub fn reply(&self) -> super::Reply {
        use super::reply::*;
        match self {
            CommandError::Unknown => SYNTAX_ERROR,
            CommandError::Syntax(_) | CommandError::BadParameter(_) => PARAM_SYNTAX,
            CommandError::BadSender(_) => BAD_SENDER_SYNTAX,
            CommandError::BadRecipient(_) => BAD_RECIPIENT_SYNTAX,
            CommandError::UnknownParameter(_) => UNKNOWN_PARAMETER,
            CommandError::BadChunkSize => BAD_CHUNK_SIZE,
        }
    }
}

/// RFC 3461 §4.4: ENVID at most 100 characters.
pub const MAX_ENVID: usize = 100;
/// RFC 3461 §4.2: ORCPT address at most 500 characters.
pub const MAX_ORCPT: usize = 500;

pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Syntax("not UTF-8"))?;
    if line.chars().any(|c| c.is_control()) {
        return Err(CommandError::Syntax("control character"));
    }
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, Some(r)),
        None => (line, None),
    };
    let none = |cmd: Command| match rest {
        None => Ok(cmd),
        Some(_) => Err(CommandError::Syntax("no arguments allowed")),
    };
    let arg = |what: &'static str| {
        rest.filter(|r| !r.trim().is_empty())
            .map(str::trim)
            .ok_or(CommandError::Syntax(what))
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => Ok(Command::Ehlo(hello_name(arg("EHLO needs a domain")?)?)),
        "HELO" => Ok(Command::Helo(hello_name(arg("HELO needs a domain")?)?)),
        "MAIL" => mail(rest.unwrap_or("")).map(Command::Mail),
        "RCPT" => rcpt(rest.unwrap_or("")).map(Command::Rcpt),
        "DATA" => none(Command::Data),
        "BDAT" => bdat(arg("BDAT needs a size")?),
        "RSET" => none(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => none(Command::Quit),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy(arg("VRFY needs an argument")?.to_owned())),
        "EXPN" => Ok(Command::Expn(arg("EXPN needs an argument")?.to_owned())),
        "STARTTLS" => none(Command::StartTls),
        "AUTH" => auth(arg("AUTH needs a mechanism")?),
        "ETRN" => Ok(Command::Etrn(arg("ETRN needs a domain")?.to_owned())),
        "ATRN" => atrn(rest.unwrap_or("")),
        _ => Err(CommandError::Unknown),
    }
}

/// `ATRN [domain *("," domain)]` (RFC 2645 §4.2): at most 64 names, each a domain.
fn atrn(arg: &str) -> Result<Command, CommandError> {
    let mut domains = Vec::new();
    for d in arg.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !is_domain(d) {
            return Err(CommandError::Syntax(
                "ATRN takes domains separated by commas",
            ));
        }
        domains.push(d.trim_end_matches('.').to_ascii_lowercase());
    }
    if domains.len() > 64 {
        return Err(CommandError::Syntax("ATRN: at most 64 domains"));
    }
    Ok(Command::Atrn(domains))
}

/// EHLO/HELO argument: a domain or address literal, one word (RFC 5321 §4.1.1.1). Not
/// held to the domain rule: clients name themselves badly, and the name is only recorded.
fn hello_name(s: &str) -> Result<String, CommandError> {
    let ok = !s.contains(' ')
        && s.len() <= super::domain::MAX_DOMAIN
        && s.chars().all(|c| c.is_ascii_graphic() || !c.is_ascii());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(CommandError::Syntax("bad EHLO/HELO domain"))
    }
}

/// Splits `<path> params…` after `FROM:`/`TO:`; handles quoted local parts.
fn path_and_params<'a>(
    rest: &'a str,
    keyword: &str,
) -> Result<(&'a str, Vec<&'a str>), CommandError> {
    let head = rest
        .get(..keyword.len())
        .filter(|h| h.eq_ignore_ascii_case(keyword));
    let Some(_) = head else {
        return Err(CommandError::Syntax(
            "expected FROM:<address> or TO:<address>",
        ));
    };
    let after = rest[keyword.len()..].trim_start_matches(' ');
    if !after.starts_with('<') {
        return Err(CommandError::Syntax("address must be in angle brackets"));
    }
    let mut in_quote = false;
    let mut escaped = false;
    let mut close = None;
    for (i, c) in after.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => {
                close = Some(i);
                break;
            }
            _ => {}
        }
    }
    let close = close.ok_or(CommandError::Syntax("missing >"))?;
    let path = &after[1..close];
    let params = &after[close + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(CommandError::Syntax("space needed after the address"));
    }
    Ok((path, params.split(' ').filter(|p| !p.is_empty()).collect()))
}

/// RFC 5321 §4.1.1.3: a source route (`@a,@b:user@c`) must be accepted and ignored.
fn strip_source_route(path: &str) -> &str {
    match path.find(':') {
        Some(colon) if path.starts_with('@') => &path[colon + 1..],
        _ => path,
    }
}

fn mail(rest: &str) -> Result<MailFrom, CommandError> {
    let (path, params) = path_and_params(rest, "FROM:")?;
    let path = ReversePath::parse(strip_source_route(path)).map_err(CommandError::BadSender)?;
    let mut m = MailFrom {
        path,
        size: None,
        body: None,
        smtputf8: false,
        ret: None,
        envid: None,
        auth: None,
        zstd: None,
        resume: None,
    };
    for param in params {
        let (key, value) = split_param(param);
        let bad = || CommandError::BadParameter(key.to_owned());
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let v = value.filter(|v| {
                    !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit())
                });
                set_once(
                    &mut m.size,
                    v.and_then(|v| v.parse().ok()).ok_or_else(bad)?,
                    key,
                )?;
            }
            "BODY" => {
                let body = match value.map(str::to_ascii_uppercase).as_deref() {
                    Some("7BIT") => BodyType::SevenBit,
                    Some("8BITMIME") => BodyType::EightBitMime,
                    Some("BINARYMIME") => BodyType::BinaryMime,
                    _ => return Err(bad()),
                };
                set_once(&mut m.body, body, key)?;
            }
            "SMTPUTF8" => {
                if value.is_some() || m.smtputf8 {
                    return Err(bad());
                }
                m.smtputf8 = true;
            }
            "RET" => {
                let ret = match value.map(str::to_ascii_uppercase).as_deref() {
                    Some("FULL") => Ret::Full,
                    Some("HDRS") => Ret::Hdrs,
                    _ => return Err(bad()),
                };
                set_once(&mut m.ret, ret, key)?;
            }
            "ENVID" => {
                let v = xtext(value.ok_or_else(bad)?)
                    .filter(|v| v.len() <= MAX_ENVID)
                    .ok_or_else(bad)?;
                set_once(&mut m.envid, v, key)?;
            }
            "AUTH" => {
                let v = xtext(value.ok_or_else(bad)?).ok_or_else(bad)?;
                let identity = if v == "<>" { None } else { Some(v) };
                set_once(&mut m.auth, identity, key)?;
            }
            ferry::PARAM_ZSTD => {
                let refs = match value {
                    None => Vec::new(),
                    Some(v) => v.split(',').map(str::to_owned).collect(),
                };
                let id_ok = |id: &String| {
                    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
                };
                if refs.len() > ferry::history::MAX_REFS || !refs.iter().all(id_ok) {
                    return Err(bad());
                }
                set_once(&mut m.zstd, refs, key)?;
            }
            ferry::PARAM_RESUME => {
                let v = value.and_then(ResumeKey::parse).ok_or_else(bad)?;
                set_once(&mut m.resume, v, key)?;
            }
            _ => return Err(CommandError::UnknownParameter(key.to_owned())),
        }
    }
    Ok(m)
}

fn rcpt(rest: &str) -> Result<RcptTo, CommandError> {
    let (path, params) = path_and_params(rest, "TO:")?;
    let mailbox = Mailbox::parse(strip_source_route(path)).map_err(CommandError::BadRecipient)?;
    let mut r = RcptTo {
        mailbox,
        notify: None,
        orcpt: None,
    };
    for param in params {
        let (key, value) = split_param(param);
        let bad = || CommandError::BadParameter(key.to_owned());
        match key.to_ascii_uppercase().as_str() {
            "NOTIFY" => {
                let notify = Notify::parse(value.ok_or_else(bad)?).ok_or_else(bad)?;
                set_once(&mut r.notify, notify, key)?;
            }
            "ORCPT" => {
                let v = xtext(value.ok_or_else(bad)?)
                    .filter(|v| v.len() <= MAX_ORCPT)
                    .ok_or_else(bad)?;
                let (kind, addr) = v.split_once(';').ok_or_else(bad)?;
                if kind.is_empty()
                    || addr.is_empty()
                    || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(bad());
                }
                set_once(&mut r.orcpt, v, key)?;
            }
            _ => return Err(CommandError::UnknownParameter(key.to_owned())),
        }
    }
    Ok(r)
}

fn split_param(param: &str) -> (&str, Option<&str>) {
    match param.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (param, None),
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), CommandError> {
    if slot.is_some() {
        return Err(CommandError::BadParameter(format!("{key} given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// RFC 3461 §4 xtext: `!`..`~` except `+` and `=`, with `+XX` hex escapes. `None` if
/// malformed or if it decodes to a control character.
pub(crate) fn xtext(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'=' => return None,
            b @ b'!'..=b'~' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

fn bdat(arg: &str) -> Result<Command, CommandError> {
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.len() <= 20 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse().ok())
        .ok_or(CommandError::BadChunkSize)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax("BDAT takes only LAST after the size")),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax("BDAT takes only LAST after the size"));
    }
    Ok(Command::Bdat { size, last })
}

fn auth(arg: &str) -> Result<Command, CommandError> {
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
    let initial = words.next().map(str::to_owned);
    if words.next().is_some() || mechanism.is_empty() {
        return Err(CommandError::Syntax("AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests;
