//! All classification of delivery results in one function (README, "Delivering mail"): given where in
//! the SMTP dialogue something happened and what it was, decide the outcome and which
//! recipients it applies to. 2xx delivers; 4xx defers; 5xx bounces only where the answer
//! concerns the mail (MAIL, RCPT, DATA, end of data), never where it concerns the
//! connection (banner, EHLO, STARTTLS, AUTH: our configuration or their policy, not
//! the message). 421 anywhere defers the whole connection. Not reaching the upstream
//! at all is our link, not a delivery attempt (README, "Intermittent links"). Anything unknown is
//! temporary. The few results made without a reply (a receipt, a batch written, mail
//! never sent, our link found down afterwards) are made here too, so a result's meaning
//! is never patched elsewhere. docs/flow.md names the words.

use std::fmt;

use crate::smtp::response::Response;

/// Where in the dialogue an event happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Resolve,
    Connect,
    Banner,
    Ehlo,
    StartTls,
    Auth,
    Etrn,
    Atrn,
    Mail,
    Rcpt,
    Data,
    EndOfData,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Phase::Resolve => "resolving",
            Phase::Connect => "connecting",
            Phase::Banner => "the greeting",
            Phase::Ehlo => "EHLO",
            Phase::StartTls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::Etrn => "ETRN",
            Phase::Atrn => "ATRN",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::EndOfData => "end of data",
        };
        f.write_str(name)
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The upstream answered.
    Reply(Response),
    /// The upstream answered with a reply the dialogue does not expect here (a 250 where
    /// it must say 354): a positive one is no delivery, and the connection is not to be
    /// trusted further.
    UnexpectedReply(Response),
    /// No connection could be made (refused, unreachable, timed out).
    ConnectFailed(String),
    /// The connection broke, or a reply did not come in time, after it was made.
    Broken(String),
    /// The reply could not be parsed (hostile or broken upstream).
    Protocol(String),
    /// TLS was required and could not be had (STARTTLS missing, refused, handshake or
    /// certificate failure) with a reachable host.
    TlsPolicy(String),
    /// The resolver could not be reached, or did not answer in time.
    DnsUnreachable,
    /// The resolver answered, but failed (SERVFAIL).
    DnsFailure(String),
    /// The resolver answers but cannot be trusted: it cannot show that names which must
    /// exist do, or it resolves a name that cannot exist (a captive portal, an offline
    /// LAN resolver). Its answers say nothing of the destination: our link is down.
    DnsUntrusted(String),
    /// The domain does not exist (NXDOMAIN from a healthy resolver).
    NoSuchDomain,
    /// RFC 7505 null MX: the domain accepts no mail.
    NullMx,
    /// No mail host of the domain has an address.
    NoMailHost(String),
    /// The MX points back at us.
    Loop,
    /// Every mail host of the domain was tried, and none answered; the last failure.
    NoHostAnswered { domain: String, last: String },
    /// The spool file could not be read (our failure, not the upstream's); with
    /// `mid_transaction`, content was already going out and the connection is given up.
    SpoolUnreadable {
        detail: String,
        mid_transaction: bool,
    },
    /// The message needs something the upstream lacks (SMTPUTF8, 8BITMIME, size); the
    /// RFC 3463 status says which.
    Unsupported {
        reason: String,
        status: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (at RCPT: provisionally; at end of data: delivered).
    Delivered,
    /// Try again later; counts as an attempt.
    Deferred,
    /// Permanent failure: bounce with a DSN.
    Bounced,
    /// Our link is down: not an attempt, no backoff, no ageing.
    LinkDown,
    /// Never put to the destination (the connection was already gone, or the spool
    /// file could not be read): try again soon; not an attempt, and no news of the link.
    Unsent,
}

/// Which recipients an outcome applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The recipient of this RCPT.
    Recipient,
    /// Every recipient of the transaction still pending.
    Transaction,
    /// Everything this connection was to carry.
    Connection,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub outcome: Outcome,
    pub scope: Scope,
    /// For the queue listing, logs and the DSN's Diagnostic-Code.
    pub reason: String,
    /// RFC 3463 status for a DSN, e.g. `5.1.1`.
    pub status: String,
}

pub fn classify(phase: Phase, event: &Event) -> Classified {
    let mail_scope = match phase {
        Phase::Rcpt => Scope::Recipient,
        Phase::Mail | Phase::Data | Phase::EndOfData => Scope::Transaction,
        _ => Scope::Connection,
    };
    let of = |outcome, scope, reason: String, status: &str| Classified {
        outcome,
        scope,
        reason,
        status: status.to_owned(),
    };
    match event {
        Event::Reply(r) => {
            let reason = format!("{phase}: {}", r.summary());
            let status = r.status.map(|s| s.to_string());
            if r.code == 421 {
                return of(
                    Outcome::Deferred,
                    Scope::Connection,
                    reason,
                    status.as_deref().unwrap_or("4.4.2"),
                );
            }
            match r.code / 100 {
                2 | 3 => of(
                    Outcome::Delivered,
                    mail_scope,
                    reason,
                    status.as_deref().unwrap_or("2.0.0"),
                ),
                5 if mail_scope != Scope::Connection => of(
                    Outcome::Bounced,
                    mail_scope,
                    reason,
                    status.as_deref().unwrap_or("5.0.0"),
                ),
                // 4xx anywhere, and 5xx about the connection: temporary.
                _ => of(Outcome::Deferred, mail_scope, reason, "4.0.0"),
            }
        }
        Event::ConnectFailed(why) => of(
            Outcome::LinkDown,
            Scope::Connection,
            format!("{phase}: {why}"),
            "4.4.1",
        ),
        Event::DnsUnreachable => of(
            Outcome::LinkDown,
            Scope::Connection,
            "DNS: no answer from the resolver".into(),
            "4.4.3",
        ),
        Event::Broken(why) => of(
            Outcome::Deferred,
            Scope::Connection,
            format!("{phase}: {why}"),
            "4.4.2",
        ),
        Event::Protocol(why) => of(
            Outcome::Deferred,
            Scope::Connection,
            format!("{phase}: bad reply: {why}"),
            "4.5.0",
        ),
        Event::TlsPolicy(why) => of(
            Outcome::Deferred,
            Scope::Connection,
            format!("TLS required: {why}"),
            "4.7.5",
        ),
        Event::DnsUntrusted(why) => of(
            Outcome::LinkDown,
            Scope::Connection,
            format!("DNS: {why}"),
            "4.4.3",
        ),
        Event::DnsFailure(why) => of(
            Outcome::Deferred,
            Scope::Connection,
            format!("DNS: {why}"),
            "4.4.3",
        ),
        Event::NoSuchDomain => of(
            Outcome::Bounced,
            Scope::Recipient,
            "DNS: no such domain".into(),
            "5.1.2",
        ),
        Event::NullMx => of(
            Outcome::Bounced,
            Scope::Recipient,
            "the domain accepts no mail (null MX)".into(),
            "5.1.10",
        ),
        Event::NoMailHost(why) => of(
            Outcome::Bounced,
            Scope::Recipient,
            format!("DNS: {why}"),
            "5.4.4",
        ),
        Event::Loop => of(
            Outcome::Bounced,
            Scope::Recipient,
            "mail loop: the MX points back at us".into(),
            "5.4.6",
        ),
        Event::Unsupported { reason, status } => {
            of(Outcome::Bounced, Scope::Transaction, reason.clone(), status)
        }
        Event::UnexpectedReply(r) => match classify(phase, &Event::Reply(r.clone())) {
            c if c.outcome == Outcome::Delivered => Classified {
                outcome: Outcome::Deferred,
                scope: Scope::Connection,
                ..c
            },
            c => c,
        },
        Event::NoHostAnswered { domain, last } => of(
            Outcome::Deferred,
            Scope::Connection,
            format!("no mail host of {domain} answered ({last})"),
            "4.4.1",
        ),
        Event::SpoolUnreadable {
            detail,
            mid_transaction,
        } => of(
            Outcome::Unsent,
            if *mid_transaction {
                Scope::Connection
            } else {
                Scope::Recipient
            },
            format!("reading the spool file: {detail}"),
            "4.3.0",
        ),
    }
}

impl Classified {
    /// A recipient's result decided without a dialogue: a bundle's receipt, a BSMTP
    /// batch written, mail given back to the queue. `status` is RFC 3463's.
    pub(crate) fn decided(outcome: Outcome, reason: impl Into<String>, status: &str) -> Classified {
        Classified {
            outcome,
            scope: Scope::Recipient,
            reason: reason.into(),
            status: status.to_owned(),
        }
    }

    /// What a recipient never put to the destination comes to, when `cause` ended the
    /// connection first: not an attempt.
    pub(crate) fn not_sent(cause: &Classified) -> Classified {
        Classified {
            outcome: Outcome::Unsent,
            reason: format!("not sent: {}", cause.reason),
            ..cause.clone()
        }
    }

    /// What this result means once our own link is found down after the connection
    /// died: a deferral of the whole connection was our link, not the upstream's failure
    /// (not an attempt, no backoff). Other results stand.
    pub(crate) fn with_our_link_down(self) -> Classified {
        if self.scope == Scope::Connection && self.outcome == Outcome::Deferred {
            Classified {
                outcome: Outcome::LinkDown,
                ..self
            }
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::response::ResponseReader;

    fn reply(text: &str) -> Event {
        let mut r = ResponseReader::new();
        r.push(format!("{text}\r\n").as_bytes());
        Event::Reply(r.take_response().unwrap().unwrap())
    }

    #[test]
    fn table() {
        use Outcome::*;
        use Phase::*;
        use Scope::*;
        let cases = [
            (Rcpt, reply("250 2.1.5 ok"), Delivered, Recipient, "2.1.5"),
            (
                EndOfData,
                reply("250 2.0.0 queued"),
                Delivered,
                Transaction,
                "2.0.0",
            ),
            (
                Rcpt,
                reply("451 4.7.1 greylisted"),
                Deferred,
                Recipient,
                "4.0.0",
            ),
            (
                Rcpt,
                reply("550 5.1.1 no such user"),
                Bounced,
                Recipient,
                "5.1.1",
            ),
            (
                Mail,
                reply("452 4.3.1 full"),
                Deferred,
                Transaction,
                "4.0.0",
            ),
            (
                Mail,
                reply("553 5.1.8 bad sender"),
                Bounced,
                Transaction,
                "5.1.8",
            ),
            (
                Data,
                reply("554 5.5.1 no valid recipients"),
                Bounced,
                Transaction,
                "5.5.1",
            ),
            (
                EndOfData,
                reply("552 5.3.4 too big"),
                Bounced,
                Transaction,
                "5.3.4",
            ),
            (
                EndOfData,
                reply("451 local problem"),
                Deferred,
                Transaction,
                "4.0.0",
            ),
            (
                Rcpt,
                reply("421 4.3.2 shutting down"),
                Deferred,
                Connection,
                "4.3.2",
            ),
            (Banner, reply("554 go away"), Deferred, Connection, "4.0.0"),
            (Ehlo, reply("550 not you"), Deferred, Connection, "4.0.0"),
            (
                Auth,
                reply("535 5.7.8 bad credentials"),
                Deferred,
                Connection,
                "4.0.0",
            ),
            (
                StartTls,
                reply("454 4.7.0 no TLS"),
                Deferred,
                Connection,
                "4.0.0",
            ),
            (Data, reply("354 go ahead"), Delivered, Transaction, "2.0.0"),
        ];
        for (phase, event, outcome, scope, status) in cases {
            let c = classify(phase, &event);
            assert_eq!(
                (c.outcome, c.scope, c.status.as_str()),
                (outcome, scope, status),
                "{phase} {event:?}"
            );
        }
    }

    #[test]
    fn failures_without_a_reply() {
        let c = classify(
            Phase::Connect,
            &Event::ConnectFailed("connection timed out".into()),
        );
        assert_eq!((c.outcome, c.scope), (Outcome::LinkDown, Scope::Connection));
        assert_eq!(c.reason, "connecting: connection timed out");
        assert_eq!(
            classify(Phase::Resolve, &Event::DnsUnreachable).outcome,
            Outcome::LinkDown
        );
        assert_eq!(
            classify(Phase::EndOfData, &Event::Broken("reset".into())).outcome,
            Outcome::Deferred
        );
        assert_eq!(
            classify(Phase::Rcpt, &Event::Protocol("junk".into())).outcome,
            Outcome::Deferred
        );
        assert_eq!(
            classify(
                Phase::StartTls,
                &Event::TlsPolicy("certificate expired".into())
            )
            .outcome,
            Outcome::Deferred
        );
        assert_eq!(
            classify(Phase::Resolve, &Event::DnsFailure("SERVFAIL".into())).outcome,
            Outcome::Deferred
        );
        let nx = classify(Phase::Resolve, &Event::NoSuchDomain);
        assert_eq!(
            (nx.outcome, nx.status.as_str()),
            (Outcome::Bounced, "5.1.2")
        );
        assert_eq!(classify(Phase::Resolve, &Event::NullMx).status, "5.1.10");
        assert_eq!(classify(Phase::Resolve, &Event::Loop).status, "5.4.6");
        let none = classify(Phase::Resolve, &Event::NoMailHost("x".into()));
        assert_eq!(
            (none.outcome, none.status.as_str()),
            (Outcome::Bounced, "5.4.4")
        );
        let lacks = Event::Unsupported {
            reason: "the upstream lacks SMTPUTF8".into(),
            status: "5.6.7",
        };
        let utf8 = classify(Phase::Mail, &lacks);
        assert_eq!(
            (utf8.outcome, utf8.scope, utf8.status.as_str()),
            (Outcome::Bounced, Scope::Transaction, "5.6.7")
        );
    }

    #[test]
    fn results_made_without_a_reply_or_after_one() {
        let Event::Reply(ok) = reply("250 2.0.0 ok") else {
            unreachable!()
        };
        let early = classify(Phase::Data, &Event::UnexpectedReply(ok));
        assert_eq!(
            (early.outcome, early.scope),
            (Outcome::Deferred, Scope::Connection),
            "a 250 where 354 was due delivers nothing"
        );
        let Event::Reply(no) = reply("554 5.7.1 no") else {
            unreachable!()
        };
        let refused = classify(Phase::Data, &Event::UnexpectedReply(no));
        assert_eq!(
            (refused.outcome, refused.scope),
            (Outcome::Bounced, Scope::Transaction)
        );
        let nobody = Event::NoHostAnswered {
            domain: "x.example".into(),
            last: "refused".into(),
        };
        let c = classify(Phase::Connect, &nobody);
        assert_eq!((c.outcome, c.status.as_str()), (Outcome::Deferred, "4.4.1"));
        for (mid_transaction, scope) in [(true, Scope::Connection), (false, Scope::Recipient)] {
            let unread = Event::SpoolUnreadable {
                detail: "EIO".into(),
                mid_transaction,
            };
            let c = classify(Phase::Data, &unread);
            assert_eq!((c.outcome, c.scope), (Outcome::Unsent, scope));
        }
        let broken = classify(Phase::Data, &Event::Broken("reset".into()));
        let never = Classified::not_sent(&broken);
        assert_eq!(never.outcome, Outcome::Unsent);
        assert!(never.reason.starts_with("not sent: DATA: reset"));
        assert_eq!(
            broken.clone().with_our_link_down().outcome,
            Outcome::LinkDown
        );
        let bounced = classify(Phase::Rcpt, &reply("550 5.1.1 no such user"));
        assert_eq!(
            bounced.clone().with_our_link_down(),
            bounced,
            "the answer stands"
        );
    }
}
