//! Domain names: the one rule for a domain wherever ferrymail meets one, in an address
//! (RFC 5321 §4.1.2 `Domain`), an ETRN or a flush argument, or the configuration.
//!
//! A name is dot-separated labels of letters, digits, hyphens and underscores (which
//! RFC 5321 does not allow but real hosts and DKIM selectors carry, and Postfix accepts),
//! not starting or ending with a hyphen, at most 63 octets each (RFC 1035 §2.3.4), at most
//! 255 octets in all (RFC 5321 §4.5.3.1.2). Non-ASCII characters are allowed in labels
//! (U-labels, RFC 6531 §3.3). Address literals (`[192.0.2.1]`) are not domains: `Mailbox`
//! takes them itself.

/// RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 1035 §2.3.4: a label is at most 63 octets.
pub const MAX_LABEL: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("domain longer than 255 octets")]
    TooLong,
    #[error("invalid domain")]
    Invalid,
}

/// Whether `s` is a domain by the rule above (exactly: no trailing dot, as in an
/// address). Callers keep the text they checked; domains compare without regard to case
/// (RFC 5321 §2.4).
pub fn check(s: &str) -> Result<(), DomainError> {
    if s.len() > MAX_DOMAIN {
        return Err(DomainError::TooLong);
    }
    if s.is_empty() || !s.split('.').all(is_label) {
        return Err(DomainError::Invalid);
    }
    Ok(())
}

/// True when `s` is a domain; a fully qualified name's one trailing dot is allowed
/// (`example.org.`), as configuration files and DNS tools write them.
pub fn is_domain(s: &str) -> bool {
    check(s.strip_suffix('.').unwrap_or(s)).is_ok()
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
            assert!(check(ok).is_ok(), "{ok}");
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
            assert!(check(bad).is_err(), "{bad:?}");
        }
        let long = vec!["b".repeat(50); 6].join(".");
        assert_eq!(check(&long), Err(DomainError::TooLong));
        assert!(is_domain("example.org."));
        assert!(!is_domain("example.org.."));
    }
}
