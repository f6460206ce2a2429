//! Envelope addresses (RFC 5321 §4.1.2): `Mailbox` (local@domain) and `ReversePath`
//! (a mailbox or the null path `<>`). Parsing enforces the §4.5.3.1 length limits and
//! refuses every control character, so an address can never carry a line break. The
//! spool stores them in their text form (`local@domain`, and empty for `<>`), and reading
//! a stored envelope parses them again, so a stored address obeys the same rules.

use std::fmt;

use super::domain::{self, MAX_DOMAIN};

/// RFC 5321 §4.5.3.1.1: local part at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.3: path (with the angle brackets) at most 256 octets.
pub const MAX_PATH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address contains a control character")]
    ControlCharacter,
    #[error("local part longer than 64 octets")]
    LocalPartTooLong,
    #[error("domain longer than 255 octets")]
    DomainTooLong,
    #[error("address longer than 256 octets")]
    PathTooLong,
    #[error("address has no @domain")]
    NoDomain,
    #[error("invalid local part")]
    BadLocalPart,
    #[error("invalid domain")]
    BadDomain,
}

/// `local@domain`, kept as written (the local part is case-sensitive, RFC 5321 §2.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mailbox {
    local: String,
    domain: String,
}

impl Mailbox {
    /// Parses `local@domain`, without angle brackets.
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        if s.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        let at = s.rfind('@').ok_or(AddressError::NoDomain)?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        if domain.len() > MAX_DOMAIN {
            return Err(AddressError::DomainTooLong);
        }
        if s.len() + 2 > MAX_PATH {
            return Err(AddressError::PathTooLong);
        }
        if !is_local_part(local) {
            return Err(AddressError::BadLocalPart);
        }
        if !is_domain_or_literal(domain) {
            return Err(AddressError::BadDomain);
        }
        Ok(Mailbox {
            local: local.to_owned(),
            domain: domain.to_owned(),
        })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// True when the address needs SMTPUTF8 (RFC 6531) to travel.
    pub(crate) fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The same address, but for ASCII case: how relays compare them (strictly the local
    /// part is case-sensitive, RFC 5321 §2.4, but no one relies on it and every MTA
    /// folds it).
    pub(crate) fn same_as(&self, other: &Mailbox) -> bool {
        self.local.eq_ignore_ascii_case(&other.local)
            && self.domain.eq_ignore_ascii_case(&other.domain)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// The MAIL FROM path: a mailbox, or `<>` for bounces (RFC 5321 §4.5.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ReversePath {
    #[default]
    Null,
    Mailbox(Mailbox),
}

impl ReversePath {
    /// Parses a sender as stored: empty (or `<>`) is the null path.
    pub fn parse(s: &str) -> Result<ReversePath, AddressError> {
        match s {
            "" | "<>" => Ok(ReversePath::Null),
            _ => Mailbox::parse(s).map(ReversePath::Mailbox),
        }
    }
}

impl ReversePath {
    pub fn is_null(&self) -> bool {
        matches!(self, ReversePath::Null)
    }

    /// True when the path needs SMTPUTF8 (RFC 6531) to travel.
    pub(crate) fn is_utf8(&self) -> bool {
        self.mailbox().is_some_and(Mailbox::is_utf8)
    }

    /// The mailbox, unless this is the null path.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }
}

impl From<Mailbox> for ReversePath {
    fn from(m: Mailbox) -> ReversePath {
        ReversePath::Mailbox(m)
    }
}

impl TryFrom<String> for Mailbox {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Mailbox, AddressError> {
        Mailbox::parse(&s)
    }
}

impl From<Mailbox> for String {
    fn from(m: Mailbox) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for ReversePath {
    type Error = AddressError;
    fn try_from(s: String) -> Result<ReversePath, AddressError> {
        ReversePath::parse(&s)
    }
}

impl From<ReversePath> for String {
    fn from(p: ReversePath) -> String {
        p.to_string()
    }
}

impl fmt::Display for ReversePath {
    /// The stored form: empty for the null path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// RFC 5321 §4.1.2 atext, extended by RFC 6531 to any non-ASCII character.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_local_part(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        // Quoted-string: qtextSMTP or quoted-pairSMTP (RFC 5321 §4.1.2).
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(' '..='~') => {}
                    _ => return false,
                },
                '"' => return false,
                _ => {}
            }
        }
        return true;
    }
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// A domain, or an address literal (RFC 5321 §4.1.3).
fn is_domain_or_literal(s: &str) -> bool {
    if let Some(literal) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return match literal.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
    }
    domain::check(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts() {
        for ok in [
            "a@b.c",
            "first.last+tag@example.org",
            "\"john doe\"@example.org",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "pelé@exemple.fr",
        ] {
            assert!(Mailbox::parse(ok).is_ok(), "{ok}");
        }
        assert!(Mailbox::parse("pelé@x.org").unwrap().is_utf8());
        // `$`, `{` and `}` are atext (RFC 5321 §4.1.2): valid, and kept literally, never expanded.
        assert_eq!(
            Mailbox::parse("${run{x}}@x").unwrap().local_part(),
            "${run{x}}"
        );
        assert_eq!(ReversePath::parse("").unwrap(), ReversePath::Null);
    }

    #[test]
    fn refuses() {
        let long_local = format!("{}@x.org", "a".repeat(65));
        let long_domain = format!("a@{}.org", "b".repeat(252));
        let path_too_long = format!(
            "{}@{}.org",
            "a".repeat(64),
            vec!["b".repeat(40); 5].join(".")
        );
        for (bad, err) in [
            ("a@b\r\nRCPT TO:<x>", AddressError::ControlCharacter),
            ("nobody", AddressError::NoDomain),
            (long_local.as_str(), AddressError::LocalPartTooLong),
            (long_domain.as_str(), AddressError::DomainTooLong),
            (path_too_long.as_str(), AddressError::PathTooLong),
            (";sleep 1;@x", AddressError::BadLocalPart),
            ("a..b@x.org", AddressError::BadLocalPart),
            ("a b@x.org", AddressError::BadLocalPart),
            ("a@-x.org", AddressError::BadDomain),
            ("a@[1.2.3]", AddressError::BadDomain),
            ("a@", AddressError::BadDomain),
        ] {
            assert_eq!(Mailbox::parse(bad), Err(err), "{bad:?}");
        }
    }
}
