//! Domain names: the one rule for a domain wherever ferrymail meets one, in an address
//! (RFC 5321 §4.1.2 `Domain`), an ETRN or a flush argument, or the configuration.
//!
//! A name is dot-separated labels of letters, digits, hyphens and underscores (which
//! RFC 5321 does not allow but real hosts and DKIM selectors carry, and Postfix accepts),
//! not starting or ending with a hyphen, at most 63 octets each (RFC 1035 §2.3.4), at most
//! 255 octets in all (RFC 5321 §4.5.3.1.2). Non-ASCII characters are allowed in labels
//! (U-labels, RFC 6531 §3.3). Address literals (`[192.0.2.1]`) are not domains: `Mailbox`
//! takes them itself.

use std::fmt;

/// RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 1035 §2.3.4: a label is at most 63 octets.
pub const MAX_LABEL: usize = 63;

/// A domain name that obeys the rule above, kept as written (compare with
/// `eq_ignore_ascii_case`: domains are case-insensitive, RFC 5321 §2.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("domain longer than 255 octets")]
    TooLong,
    #[error("invalid domain")]
    Invalid,
}

impl Domain {
    pub fn parse(s: &str) -> Result<Domain, DomainError> {
        if s.len() > MAX_DOMAIN {
            return Err(DomainError::TooLong);
        }
        if s.is_empty() || !s.split('.').all(is_label) {
            return Err(DomainError::Invalid);
        }
        Ok(Domain(s.to_owned()))
    }

    /// True when `s` is a domain; a fully qualified name's one trailing dot is allowed
    /// (`example.org.`), as configuration files and DNS tools write them.
    pub(crate) fn is_valid(s: &str) -> bool {
        Domain::parse(s.strip_suffix('.').unwrap_or(s)).is_ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_domain() {
        for ok in [
            "example.org",
            "a",
            "mx-1.example.org",
            "_dmarc.example.org",
            "exemple.fr",
            "bücher.example",
            &format!("{}.org", "a".repeat(63)),
        ] {
            assert!(Domain::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.org",
            "a-.org",
            "a b.org",
            "a@b.org",
            "[192.0.2.1]",
            "a\r\n.org",
            "example.org.",
            &format!("{}.org", "a".repeat(64)),
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?}");
        }
        let long = vec!["b".repeat(50); 6].join(".");
        assert_eq!(Domain::parse(&long), Err(DomainError::TooLong));
        assert!(Domain::is_valid("example.org."));
        assert!(!Domain::is_valid("example.org.."));
    }
}
