//! One SMTP session as a pure state machine: `handle(Command) -> Step`, no I/O. Session
//! scope (greeting, TLS, authentication) is kept apart from transaction scope (MAIL,
//! RCPT): RSET and a finished message drop the transaction only; STARTTLS drops both.
//! One function per verb, each checking state before acting. The connection driver does
//! the I/O that a `Step` asks for (reading DATA or BDAT, the TLS handshake, SASL).

use std::net::IpAddr;
use std::sync::Arc;

use super::policy::RelayPolicy;
use crate::config::{Config, ListenKind};
use crate::smtp::BodyType;
use crate::smtp::reply::{self, Reply};
use crate::smtp::{Command, MailFrom, RcptTo, ReversePath};

/// What a session needs to know about the listener and the site.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub hostname: String,
    pub kind: ListenKind,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub policy: RelayPolicy,
    /// A certificate is configured, so STARTTLS can be offered.
    pub tls_available: bool,
    /// AUTH credentials are configured.
    pub auth_available: bool,
    /// Protocol errors before the session is closed with 421.
    pub max_errors: u32,
    /// ETRN is served: the daemon sets this when it supplies the flush service.
    pub etrn_available: bool,
    /// Clients that may ETRN without authenticating (`etrn.allowed_networks`).
    pub etrn_networks: Vec<crate::config::IpNet>,
    /// An `odmr` listener takes AUTH only over TLS.
    pub odmr_require_tls: bool,
    /// Local names, aliases and sender rewriting, applied when a message is committed.
    pub identity: std::sync::Arc<crate::identity::Identity>,
    /// XFERRY is offered (the listener's `ferry`; docs/xferry.md).
    pub ferry: bool,
}

/// Protocol errors before a session is closed with 421 (Postfix's soft limit).
pub const MAX_ERRORS: u32 = 10;

impl SessionConfig {
    /// The settings of a listener of `kind` under `config`: STARTTLS when `[tls]` is
    /// set, AUTH when `accept.users` is.
    pub fn from_config(config: &Config, kind: ListenKind) -> SessionConfig {
        SessionConfig {
            hostname: config.hostname.clone(),
            kind,
            max_message_size: config.accept.max_message_size.0,
            max_recipients: config.accept.max_recipients as usize,
            policy: RelayPolicy::from_config(config),
            tls_available: config.tls.is_some(),
            auth_available: config.accept.users.is_some(),
            max_errors: MAX_ERRORS,
            etrn_available: false,
            etrn_networks: config.etrn.allowed_networks.clone(),
            odmr_require_tls: true,
            identity: std::sync::Arc::new(
                crate::identity::Identity::from_config(config).unwrap_or_default(),
            ),
            ferry: false,
        }
    }
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
    /// Send 354, read the message with the DATA reader, then call `message_received`.
    Data,
    /// Read `size` bytes of BDAT content; `accept` is false when the chunk must be read
    /// and discarded (the reply is then already decided: `reject`).
    Bdat {
        size: u64,
        last: bool,
        reject: Option<Reply>,
    },
    /// Send 220, run the TLS handshake, then call `tls_started`.
    StartTls,
    /// Run the SASL exchange for `mechanism`, then call `authenticated`.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// Start delivery of what waits for `node` (and its subdomains), then reply.
    Etrn {
        node: String,
        subdomains: bool,
    },
    /// RFC 2645: the authenticated station asks for its mail (`domains`, or all of its
    /// own when empty): grant the turn (250, then the connection is reversed) or refuse.
    Atrn {
        domains: Vec<String>,
    },
    /// XFERRY: the MAIL just taken asks to resume under `key`: claim what is held for
    /// it and say how much in the 250.
    Resume(crate::ferry::ResumeKey),
}

/// The transaction in progress: MAIL, then RCPTs, then content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub mail: MailFrom,
    pub recipients: Vec<RcptTo>,
    /// BDAT chunks have started: DATA is no longer allowed (RFC 3030 §2).
    pub bdat_started: bool,
}

pub struct Session {
    config: Arc<SessionConfig>,
    client: IpAddr,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    auth: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
}

impl Session {
    pub fn new(config: Arc<SessionConfig>, client: IpAddr, tls: bool) -> Session {
        Session {
            config,
            client,
            helo: None,
            esmtp: false,
            tls,
            auth: None,
            tx: None,
            errors: 0,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::new(220, None, "").with_text(format!("{} ESMTP ferrymail", self.config.hostname))
    }

    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    pub fn authenticated(&self) -> Option<&str> {
        self.auth.as_deref()
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    pub fn transaction(&self) -> Option<&Transaction> {
        self.tx.as_ref()
    }

    /// A protocol error: counts toward the limit, and closes with 421 past it.
    pub fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            Step::Close(reply::TOO_MANY_ERRORS)
        } else {
            Step::Reply(reply)
        }
    }

    pub fn handle(&mut self, command: Command) -> Step {
        if self.config.kind == ListenKind::Odmr && !odmr_command(&command) {
            return self.error(reply::ODMR_ONLY);
        }
        match command {
            Command::Ehlo(name) => self.ehlo(name),
            Command::Helo(name) => self.helo_cmd(name),
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt(rcpt) => self.rcpt(rcpt),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Step::Reply(reply::OK)
            }
            Command::Noop => Step::Reply(reply::OK),
            Command::Quit => Step::Close(reply::CLOSING),
            Command::Help => Step::Reply(reply::HELP),
            Command::Vrfy(_) => Step::Reply(reply::CANNOT_VRFY),
            Command::Expn(_) => self.error(reply::NOT_IMPLEMENTED),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::Etrn(arg) => self.etrn(&arg),
            Command::Atrn(domains) => self.atrn(domains),
        }
    }

    /// RFC 2645 §4: after EHLO, from a station that has authenticated, on an `odmr`
    /// listener.
    fn atrn(&mut self, domains: Vec<String>) -> Step {
        if self.config.kind != ListenKind::Odmr {
            return self.error(reply::NOT_IMPLEMENTED);
        }
        if !self.esmtp {
            return self.error(reply::BAD_SEQUENCE.with_text("Send EHLO first"));
        }
        if self.auth.is_none() {
            return self.error(reply::AUTH_REQUIRED);
        }
        Step::Atrn { domains }
    }

    /// AUTH may go without TLS: on an `odmr` listener that says so.
    fn auth_without_tls(&self) -> bool {
        self.config.kind == ListenKind::Odmr && !self.config.odmr_require_tls
    }

    fn ehlo(&mut self, name: String) -> Step {
        self.helo = Some(name);
        self.esmtp = true;
        self.tx = None;
        let c = &self.config;
        if c.kind == ListenKind::Odmr {
            // RFC 2645 §4.1: AUTH and ATRN; mail comes the other way, after the turn.
            let mut lines = vec![c.hostname.clone(), "ENHANCEDSTATUSCODES".into()];
            if c.tls_available && !self.tls {
                lines.push("STARTTLS".into());
            }
            if c.auth_available && self.auth.is_none() && (self.tls || self.auth_without_tls()) {
                lines.push("AUTH CRAM-MD5 PLAIN".into());
            }
            lines.push("ATRN".into());
            return Step::Reply(Reply::new(250, None, "").with_text(lines.join("\n")));
        }
        let mut lines = vec![
            c.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", c.max_message_size),
        ];
        lines.extend(
            [
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
                "CHUNKING",
                "DSN",
            ]
            .map(String::from),
        );
        if c.etrn_available {
            lines.push("ETRN".into());
        }
        if c.ferry {
            lines.push(crate::ferry::EHLO_LINE.into());
        }
        if c.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        if c.auth_available && self.tls && self.auth.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        // RFC 2034: keywords, not status codes, follow the 250s of an EHLO reply.
        Step::Reply(Reply::new(250, None, "").with_text(lines.join("\n")))
    }

    fn helo_cmd(&mut self, name: String) -> Step {
        self.helo = Some(name);
        self.esmtp = false;
        self.tx = None;
        Step::Reply(Reply::new(250, None, "").with_text(self.config.hostname.clone()))
    }

    fn mail(&mut self, mail: MailFrom) -> Step {
        if self.helo.is_none() {
            return self.error(reply::BAD_SEQUENCE.with_text("Send EHLO or HELO first"));
        }
        if self.tx.is_some() {
            return self.error(reply::BAD_SEQUENCE.with_text("Nested MAIL command"));
        }
        if self.config.kind == ListenKind::Submission && self.auth.is_none() {
            return self.error(reply::AUTH_REQUIRED);
        }
        let esmtp_only = mail.size.is_some()
            || mail.body.is_some()
            || mail.smtputf8
            || mail.ret.is_some()
            || mail.envid.is_some();
        if esmtp_only && !self.esmtp {
            return self.error(reply::UNKNOWN_PARAMETER.with_text("Parameters need EHLO"));
        }
        if mail.uses_xferry() && !(self.config.ferry && self.esmtp) {
            return self.error(reply::UNKNOWN_PARAMETER);
        }
        if mail.size.is_some_and(|s| s > self.config.max_message_size) {
            return Step::Reply(reply::MESSAGE_TOO_BIG);
        }
        if mail.body == Some(BodyType::BinaryMime) {
            return self.error(reply::PARAM_NOT_IMPLEMENTED.with_text("BINARYMIME not supported"));
        }
        if let ReversePath::Mailbox(m) = &mail.path
            && m.is_utf8()
            && !mail.smtputf8
        {
            return Step::Reply(reply::NEEDS_SMTPUTF8);
        }
        let resume = mail.resume.clone();
        self.tx = Some(Transaction {
            mail,
            recipients: Vec::new(),
            bdat_started: false,
        });
        match resume {
            Some(key) => Step::Resume(key),
            None => Step::Reply(reply::SENDER_OK),
        }
    }

    fn rcpt(&mut self, rcpt: RcptTo) -> Step {
        let Some(tx) = &self.tx else {
            return self.error(reply::BAD_SEQUENCE.with_text("Need MAIL before RCPT"));
        };
        if tx.recipients.len() >= self.config.max_recipients {
            return Step::Reply(reply::TOO_MANY_RECIPIENTS);
        }
        if rcpt.mailbox.is_utf8() && !tx.mail.smtputf8 {
            return Step::Reply(reply::NEEDS_SMTPUTF8);
        }
        if !self
            .config
            .policy
            .allows(self.client, self.auth.is_some(), &rcpt.mailbox)
        {
            return Step::Reply(reply::RELAY_DENIED);
        }
        self.tx
            .as_mut()
            .expect("checked above")
            .recipients
            .push(rcpt);
        Step::Reply(reply::RECIPIENT_OK)
    }

    fn ready_for_content(&self) -> Result<(), Reply> {
        match &self.tx {
            None => Err(reply::BAD_SEQUENCE.with_text("Need MAIL and RCPT first")),
            Some(tx) if tx.recipients.is_empty() => Err(Reply::new(
                554,
                Some(reply::Status(5, 5, 1)),
                "No valid recipients",
            )),
            Some(_) => Ok(()),
        }
    }

    fn data(&mut self) -> Step {
        if let Err(r) = self.ready_for_content() {
            return self.error(r);
        }
        if self.tx.as_ref().is_some_and(|t| t.bdat_started) {
            return self.error(reply::BAD_SEQUENCE.with_text("DATA after BDAT"));
        }
        if self.tx.as_ref().is_some_and(|t| t.mail.uses_xferry()) {
            return self.error(reply::BAD_SEQUENCE.with_text("XFERRY content goes by BDAT"));
        }
        Step::Data
    }

    fn bdat(&mut self, size: u64, last: bool) -> Step {
        if let Err(r) = self.ready_for_content() {
            self.errors += 1;
            return Step::Bdat {
                size,
                last,
                reject: Some(r),
            };
        }
        self.tx.as_mut().expect("checked above").bdat_started = true;
        Step::Bdat {
            size,
            last,
            reject: None,
        }
    }

    fn starttls(&mut self) -> Step {
        if self.tls {
            return self.error(reply::BAD_SEQUENCE.with_text("TLS already active"));
        }
        if !self.config.tls_available {
            return self.error(reply::TLS_UNAVAILABLE);
        }
        Step::StartTls
    }

    fn auth(&mut self, mechanism: String, initial: Option<String>) -> Step {
        if !self.config.auth_available || !self.esmtp {
            return self.error(reply::NOT_IMPLEMENTED);
        }
        if !self.tls && !self.auth_without_tls() {
            return self.error(reply::TLS_REQUIRED);
        }
        if self.auth.is_some() || self.tx.is_some() {
            return self.error(reply::BAD_SEQUENCE);
        }
        let known = if self.config.kind == ListenKind::Odmr {
            matches!(mechanism.as_str(), "PLAIN" | "CRAM-MD5")
        } else {
            matches!(mechanism.as_str(), "PLAIN" | "LOGIN")
        };
        if !known {
            return self.error(
                reply::PARAM_NOT_IMPLEMENTED.with_text("Unsupported authentication mechanism"),
            );
        }
        Step::Auth { mechanism, initial }
    }

    /// RFC 1985: after HELO/EHLO, outside a transaction; a domain or `@domain`; from
    /// an allowed network or an authenticated client.
    fn etrn(&mut self, arg: &str) -> Step {
        if !self.config.etrn_available {
            return self.error(reply::NOT_IMPLEMENTED);
        }
        if self.helo.is_none() || self.tx.is_some() {
            return self.error(reply::BAD_SEQUENCE);
        }
        let Some((node, subdomains)) = super::etrn::parse_node(arg) else {
            return self.error(reply::ETRN_BAD_NODE);
        };
        let allowed = self.auth.is_some()
            || self
                .config
                .etrn_networks
                .iter()
                .any(|net| net.contains(self.client));
        if !allowed {
            return Step::Reply(super::etrn::not_allowed(&node));
        }
        Step::Etrn { node, subdomains }
    }

    /// The TLS handshake finished: RFC 3207 §4.2, everything from before is forgotten.
    pub(crate) fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.auth = None;
        self.tx = None;
    }

    /// SASL succeeded for `user`.
    pub(crate) fn authenticated_as(&mut self, user: String) {
        self.auth = Some(user);
    }

    /// The content was read (or refused): the transaction is over either way.
    pub(crate) fn message_done(&mut self) -> Option<Transaction> {
        self.tx.take()
    }
}

/// What an `odmr` listener takes before the turn (RFC 2645 §4): no mail this way.
fn odmr_command(command: &Command) -> bool {
    matches!(
        command,
        Command::Ehlo(_)
            | Command::Helo(_)
            | Command::Auth { .. }
            | Command::Atrn(_)
            | Command::StartTls
            | Command::Rset
            | Command::Noop
            | Command::Quit
            | Command::Help
    )
}

#[cfg(test)]
mod tests;
