//! ETRN (RFC 1985) on the listener side: the session decides whether the request may be
//! made (syntax, sequence, `etrn.allowed_networks` or an authenticated client); a
//! `Flush` service supplied by the daemon starts the delivery, which goes to the
//! domain's route, never back down this connection. Replies per RFC 1985 §5.

use std::future::Future;
use std::pin::Pin;

use crate::smtp::reply::{self, Reply};

/// What starting a flush for a node did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// `released` recipients made due; `coalesced`: a run was already going.
    Started { released: usize, coalesced: bool },
    /// It could not be queued (the spool failed).
    Failed,
}

/// Starts delivery for a node: `domain`, and its subdomains with `subdomains`.
pub trait Flush: Send + Sync {
    fn flush<'a>(
        &'a self,
        domain: &'a str,
        subdomains: bool,
    ) -> Pin<Box<dyn Future<Output = Flushed> + Send + 'a>>;
}

/// The RFC 1985 §5 reply for what a flush of `node` did. `node` is a checked domain.
pub fn answer(node: &str, flushed: Flushed) -> Reply {
    match flushed {
        Flushed::Started { released: 0, .. } => {
            reply::ETRN_NONE_WAITING.with_text(format!("OK, no messages waiting for node {node}"))
        }
        Flushed::Started {
            coalesced: true, ..
        } => reply::ETRN_PENDING.with_text(format!("OK, pending messages for node {node} started")),
        Flushed::Started { released, .. } => reply::ETRN_STARTED.with_text(format!(
            "OK, {released} pending messages for node {node} started"
        )),
        Flushed::Failed => {
            reply::ETRN_CANNOT_QUEUE.with_text(format!("Unable to queue messages for node {node}"))
        }
    }
}

/// RFC 1985 §5: 459, this client may not flush `node`.
pub(crate) fn not_allowed(node: &str) -> Reply {
    reply::ETRN_NOT_ALLOWED.with_text(format!("Node {node} not allowed: not an ETRN client"))
}

/// The node an ETRN names: `domain` or `@domain` (subdomains too). Queue names (`#x`,
/// RFC 1985 §4) and anything that is not a domain are refused; the name is never used
/// as a path or passed to a program.
pub(crate) fn parse_node(arg: &str) -> Option<(String, bool)> {
    let arg = arg.trim();
    let (name, subdomains) = match arg.strip_prefix('@') {
        Some(rest) => (rest, true),
        None => (arg, false),
    };
    crate::smtp::domain::is_domain(name)
        .then(|| (name.trim_end_matches('.').to_ascii_lowercase(), subdomains))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes() {
        assert_eq!(
            parse_node("Field.Example"),
            Some(("field.example".into(), false))
        );
        assert_eq!(
            parse_node("@field.example"),
            Some(("field.example".into(), true))
        );
        for bad in [
            "#queue",
            "#../x",
            ";reboot",
            "a b",
            "",
            "@",
            &"x".repeat(300),
            "../etc",
        ] {
            assert_eq!(parse_node(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replies() {
        let started = |released, coalesced| Flushed::Started {
            released,
            coalesced,
        };
        assert_eq!(answer("f.example", started(0, false)).code, 251);
        assert_eq!(answer("f.example", started(3, true)).code, 252);
        let r = answer("f.example", started(3, false));
        assert_eq!(
            (r.code, r.text.as_ref()),
            (253, "OK, 3 pending messages for node f.example started")
        );
        assert_eq!(answer("f.example", Flushed::Failed).code, 458);
        assert_eq!(not_allowed("f.example").code, 459);
    }
}
