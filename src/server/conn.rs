//! The connection driver: socket I/O around a `Session`. It frames command lines, sends
//! replies in batches (sent only before it must wait for input, so pipelined commands
//! get pipelined replies), streams DATA and BDAT content into an `Intake`, and enforces
//! the timeouts and the unauthenticated-pipelining rule (RFC 5321 §4.3.1 and RFC 2920 §3.1: commands sent after
//! DATA or end of data without waiting for the reply are a protocol synchronization
//! error). Nothing is acknowledged with 250 before the spool says it is durable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::auth::{MAX_CONCURRENT_CHECKS, Throttle, Users};
use super::bdat_in::BdatIn;
use super::intake::Intake;
use super::received::{MAX_RECEIVED, TraceInfo, received_header};
use super::replies::{MAX_COMMITS, Replies};
use super::session::{Session, SessionConfig, Step};
use super::stream::Stream;
use super::tls::ServerTls;
use crate::ferry::history::Committed;
use crate::ferry::partial::Partial;
use crate::smtp::command::{Command, CommandError, parse};
use crate::smtp::data::{DataProgress, DataReader};
use crate::smtp::line::{Framed, LineFramer};
use crate::smtp::reply::{self, Reply};
use crate::spool::{Envelope, Origin, OriginKind, Recipient, Spool, SpoolError};

#[derive(Clone, Debug)]
pub struct Timeouts {
    /// Waiting for a command (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    pub command: Duration,
    /// Waiting for more content inside DATA or BDAT.
    pub data: Duration,
    /// The whole session.
    pub session: Duration,
    /// Wait before the banner to catch clients that talk first (Postfix's postscreen
    /// greet wait). Zero still catches input that is already there.
    pub greet_pause: Duration,
    /// Content must arrive at least this fast (octets a second; 0: no floor): each
    /// octet received extends the time left for the content by 1/rate seconds, never
    /// beyond `data` from now, as Postfix's `smtpd_min_data_rate` does.
    pub min_data_rate: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(300),
            data: Duration::from_secs(300),
            session: Duration::from_secs(3600),
            greet_pause: Duration::ZERO,
            min_data_rate: 500,
        }
    }
}

/// What every connection of a listener shares.
pub struct ServerContext {
    pub session: Arc<SessionConfig>,
    pub spool: Spool,
    pub timeouts: Timeouts,
    pub shutdown: CancellationToken,
    /// The certificate, when `[tls]` is configured.
    pub tls: Option<Arc<ServerTls>>,
    /// AUTH credentials, when `accept.users` is configured.
    pub auth: Option<Arc<AuthContext>>,
    /// Who starts deliveries for ETRN (the daemon's queue owner).
    pub etrn: Option<Arc<dyn super::etrn::Flush>>,
    /// Connection counts, for the metrics (shared by every listener).
    pub stats: Arc<ServerStats>,
    /// How many connections the listener takes, and from whom.
    pub limits: super::ConnectionLimits,
    /// Accounts and turns, on an `odmr` listener.
    pub odmr: Option<Arc<dyn super::turns::Turns>>,
    /// Where cut transfers are kept for resuming, on a `ferry` listener.
    pub partials: Option<Arc<crate::ferry::partial::PartialStore>>,
}

/// Connections accepted, refused and open now, by the accept loops.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub accepted: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub open: std::sync::atomic::AtomicI64,
}

/// What AUTH needs, shared by every listener.
pub struct AuthContext {
    pub users: Users,
    /// Bounds concurrent argon2 checks (memory).
    pub checks: tokio::sync::Semaphore,
    pub throttle: Throttle,
}

impl AuthContext {
    pub fn new(users: Users) -> AuthContext {
        AuthContext {
            users,
            checks: tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS),
            throttle: Throttle::default(),
        }
    }
}

const READ_SIZE: usize = 64 * 1024;
/// Free space kept in reserve below the spool (beyond a message's declared SIZE).
const MIN_FREE_SPACE: u64 = 1 << 20;

/// The time content has left (Postfix's `smtpd_min_data_rate`): `data` at first, each
/// octet received adding 1/`min_data_rate` seconds, never beyond `data` from now. A
/// client that trickles content slower than the floor runs out of time.
pub(super) struct ContentClock {
    deadline: Instant,
}

impl ContentClock {
    pub(super) fn new(t: &Timeouts) -> ContentClock {
        ContentClock {
            deadline: Instant::now() + t.data,
        }
    }

    fn received(&mut self, octets: usize, t: &Timeouts) {
        let ceiling = Instant::now() + t.data;
        self.deadline = if t.min_data_rate == 0 {
            ceiling
        } else {
            let earned = Duration::from_secs_f64(octets as f64 / t.min_data_rate as f64);
            (self.deadline + earned).min(ceiling)
        };
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Why a connection ended early; logged, never shown to the peer.
#[derive(Debug, thiserror::Error)]
pub(super) enum Ended {
    #[error("closed by the client")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("closed after a reply")]
    Closed,
}

pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) peer: SocketAddr,
    pub(super) ctx: Arc<ServerContext>,
    pub(super) session: Session,
    pub(super) framer: LineFramer,
    pub(super) input: Vec<u8>,
    pub(super) output: Replies,
    pub(super) deadline: Instant,
    pub(super) bdat: Option<BdatIn>,
    /// XFERRY: what is held for the transaction's resume key, until its first BDAT.
    pub(super) resume: Option<Partial>,
    /// XFERRY: this connection's small committed messages, for XZSTD to refer to.
    pub(super) committed: Arc<std::sync::Mutex<Committed>>,
    pub(super) auth_failures: u32,
}

/// Serves one connection to its end (`stream` is already TLS on an smtps listener).
pub async fn serve_connection(stream: Stream, peer: SocketAddr, ctx: Arc<ServerContext>) {
    let session = Session::new(ctx.session.clone(), peer.ip(), stream.is_tls());
    let deadline = Instant::now() + ctx.timeouts.session;
    let mut conn = Conn {
        stream,
        peer,
        ctx,
        session,
        framer: LineFramer::new(),
        input: Vec::with_capacity(READ_SIZE),
        output: Replies::default(),
        deadline,
        bdat: None,
        resume: None,
        committed: Arc::default(),
        auth_failures: 0,
    };
    let result = conn.run().await;
    if let Some(content) = conn.bdat.take() {
        content.keep().await;
    }
    // Commits still running finish before the connection is let go (sending the replies waits for
    // them before it writes), whether or not their replies can still be sent.
    let _ = conn.send_replies().await;
    match result {
        Ok(()) | Err(Ended::Closed) | Err(Ended::Eof) => {
            tracing::debug!(peer = %peer, "connection closed")
        }
        Err(e) => tracing::debug!(peer = %peer, error = %e, "connection ended"),
    }
}

impl Conn {
    async fn run(&mut self) -> Result<(), Ended> {
        let greeting = self.session.greeting();
        self.reply(&greeting);
        loop {
            match self.framer.next(&self.input) {
                Framed::Line { len, consumed } => {
                    let line = self.input[..len].to_vec();
                    self.input.drain(..consumed);
                    self.command(&line).await?;
                }
                Framed::TooLong { consumed } => {
                    self.input.drain(..consumed);
                    let step = self.session.error(reply::LINE_TOO_LONG);
                    self.act(step).await?;
                }
                Framed::Incomplete { consumed } => {
                    self.input.drain(..consumed);
                    let timeout = self.ctx.timeouts.command;
                    self.read_more(timeout).await?;
                }
                Framed::BareLineEnding => return self.close(&reply::BARE_LINE_ENDING).await,
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<(), Ended> {
        let step = match parse(line) {
            Ok(Command::Mail(mail)) if !self.room_for(mail.size) => {
                drop(mail);
                Step::Reply(reply::NO_SPACE)
            }
            Ok(command) => self.session.handle(command),
            Err(CommandError::Unknown) if is_http(line) => {
                return self
                    .close(&reply::SYNTAX_ERROR.with_text("This is an SMTP server"))
                    .await;
            }
            // The chunk follows with no length we can trust: it cannot be skipped.
            Err(e @ CommandError::BadChunkSize) => Step::Close(e.reply()),
            Err(e) => self.session.error(e.reply()),
        };
        let is_bdat = matches!(step, Step::Bdat { .. });
        self.act(step).await?;
        if !is_bdat && self.session.transaction().is_none() {
            self.bdat = None;
            self.resume = None;
        }
        Ok(())
    }

    async fn act(&mut self, step: Step) -> Result<(), Ended> {
        match step {
            Step::Reply(r) => {
                self.reply(&r);
                Ok(())
            }
            Step::Close(r) => self.close(&r).await,
            Step::Data => self.data().await,
            Step::Bdat { size, last, reject } => self.bdat(size, last, reject).await,
            Step::Resume(key) => {
                let r = self.claim_resume(key).await;
                self.reply(&r);
                Ok(())
            }
            Step::StartTls => self.starttls().await,
            Step::Auth { mechanism, initial } if self.ctx.odmr.is_some() => {
                self.odmr_auth(&mechanism, initial).await
            }
            Step::Auth { mechanism, initial } => self.auth(&mechanism, initial).await,
            Step::Atrn { domains } => self.atrn(domains).await,
            Step::Etrn { node, subdomains } => {
                let r = match &self.ctx.etrn {
                    Some(service) => {
                        super::etrn::answer(&node, service.flush(&node, subdomains).await)
                    }
                    None => reply::NOT_IMPLEMENTED,
                };
                self.reply(&r);
                Ok(())
            }
        }
    }

    /// RFC 3207: 220, then the handshake. Plaintext the client pipelined after STARTTLS
    /// is thrown away unread (CVE-2011-0411), and the session starts over.
    async fn starttls(&mut self) -> Result<(), Ended> {
        let Some(tls) = self.ctx.tls.clone() else {
            self.reply(&reply::TLS_UNAVAILABLE);
            return Ok(());
        };
        self.reply(&reply::READY_FOR_TLS);
        self.send_replies().await?;
        self.input.clear();
        self.framer = LineFramer::new();
        let acceptor = tls.acceptor();
        let handshake =
            tokio::time::timeout(self.ctx.timeouts.command, self.stream.upgrade(&acceptor));
        match handshake.await {
            Ok(Ok(())) => {
                self.session.tls_started();
                Ok(())
            }
            Ok(Err(e)) => Err(Ended::Io(e)),
            Err(_) => Err(Ended::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ))),
        }
    }

    pub(super) fn reply(&mut self, r: &Reply) {
        self.output.push(r);
    }

    pub(super) async fn close(&mut self, r: &Reply) -> Result<(), Ended> {
        self.reply(r);
        self.send_replies().await?;
        Err(Ended::Closed)
    }

    /// Sends every reply queued, each commit's once it is done.
    pub(super) async fn send_replies(&mut self) -> Result<(), Ended> {
        if !self.output.is_empty() {
            let bytes = self.output.take().await;
            self.stream.write_all(&bytes).await?;
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// Flushes pending replies, then waits for more input.
    pub(super) async fn read_more(&mut self, timeout: Duration) -> Result<(), Ended> {
        self.send_replies().await?;
        let limit = timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        let mut buf = [0u8; READ_SIZE];
        let shutdown = self.ctx.shutdown.clone();
        let read = tokio::select! {
            _ = shutdown.cancelled() => return self.close(&reply::SHUTTING_DOWN).await,
            r = tokio::time::timeout(limit, self.stream.read(&mut buf)) => r,
        };
        match read {
            Err(_) => self.close(&reply::TIMEOUT).await,
            Ok(Ok(0)) => Err(Ended::Eof),
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&buf[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// More content, within the time `clock` leaves; what arrives extends it.
    pub(super) async fn read_content(&mut self, clock: &mut ContentClock) -> Result<(), Ended> {
        if let Err(e) = self.send_replies().await {
            // The replies cannot go out (the link is cut), but what has already arrived
            // of a resumable transfer is worth keeping: read on to the end of it.
            if !self.bdat.as_ref().is_some_and(BdatIn::keeps_partial) {
                return Err(e);
            }
        }
        let before = self.input.len();
        self.read_more(clock.left()).await?;
        clock.received(self.input.len() - before, &self.ctx.timeouts);
        Ok(())
    }

    /// Free space check at MAIL: room for the declared size (or the limit) plus a margin,
    /// so a full disk answers 452 before the client sends the content.
    fn room_for(&self, declared: Option<u64>) -> bool {
        let needed = declared.unwrap_or(0).saturating_add(MIN_FREE_SPACE);
        match rustix::fs::statvfs(&self.ctx.spool.layout().root) {
            Ok(st) => st.f_bavail.saturating_mul(st.f_frsize) >= needed,
            Err(_) => true, // cannot tell: the commit will say
        }
    }

    /// RFC 2920 allows no command after DATA before the 354, and we ask the
    /// same after end of data, unless the client authenticated.
    fn pipelined_too_early(&self) -> bool {
        !self.input.is_empty() && self.session.authenticated().is_none()
    }

    pub(super) async fn start_intake(&mut self) -> Intake {
        let tx = self
            .session
            .transaction()
            .expect("content only inside a transaction")
            .clone();
        let recipients = tx
            .recipients
            .iter()
            .map(|r| Recipient {
                address: r.mailbox.clone(),
                notify: r.notify.clone(),
                orcpt: r.orcpt.clone(),
            })
            .collect();
        let origin = Origin {
            kind: OriginKind::Smtp,
            client: Some(self.peer.ip().to_string()),
            helo: self.session.helo().map(str::to_owned),
            auth: self.session.authenticated().map(str::to_owned),
            ..Origin::default()
        };
        let mut envelope = Envelope {
            body: tx.mail.body,
            smtputf8: tx.mail.smtputf8,
            envid: tx.mail.envid.clone(),
            ret: tx.mail.ret,
            ..Envelope::new(tx.mail.path.clone(), recipients, origin)
        };
        let edits = self.ctx.session.identity.prepare(&mut envelope);
        let single = match tx.recipients.as_slice() {
            [only] => Some(only.mailbox.to_string()),
            _ => None,
        };
        let trace = received_header(&TraceInfo {
            helo: self.session.helo(),
            client: self.peer.ip(),
            hostname: &self.ctx.session.hostname,
            esmtp: self.session.esmtp(),
            tls: self.session.tls(),
            authenticated: self.session.authenticated().is_some(),
            id: envelope.id.as_str(),
            single_recipient: single.as_deref(),
        });
        // RFC 6409 §8: a submission server may complete Date and Message-ID; we do it
        // for authenticated clients only, never for relayed mail.
        let fix = self
            .session
            .authenticated()
            .map(|_| self.ctx.session.hostname.clone());
        Intake::start(&self.ctx.spool, envelope, trace, fix, edits).await
    }

    async fn data(&mut self) -> Result<(), Ended> {
        if self.pipelined_too_early() {
            return self.close(&reply::SYNC_ERROR).await;
        }
        self.reply(&reply::START_DATA);
        let mut clock = ContentClock::new(&self.ctx.timeouts);
        let mut intake = self.start_intake().await;
        let mut reader = DataReader::new(self.ctx.session.max_message_size);
        let mut content = Vec::with_capacity(READ_SIZE);
        loop {
            content.clear();
            let progress = reader.feed(&self.input, &mut content);
            let done = match progress {
                Err(_) => {
                    self.session.message_done();
                    return self.close(&reply::BARE_LINE_ENDING).await;
                }
                Ok(DataProgress::Done { consumed }) => {
                    self.input.drain(..consumed);
                    true
                }
                Ok(DataProgress::More) => {
                    self.input.clear();
                    false
                }
            };
            intake.push(&content).await;
            if done {
                break;
            }
            self.read_content(&mut clock).await?;
        }
        self.session.message_done();
        self.finish(intake, reader.too_big()).await?;
        if self.pipelined_too_early() {
            return self.close(&reply::SYNC_ERROR).await;
        }
        Ok(())
    }

    /// Queues the reply for received content: refused at once, or committed on its own
    /// task, its 250 queued behind it (commands pipelined after it go on meanwhile).
    async fn finish(&mut self, intake: Intake, too_big: bool) -> Result<(), Ended> {
        self.finish_resumed(intake, too_big, None, None).await
    }

    /// `finish` for XFERRY content: what is held for a resumed one is removed once the
    /// message is committed, or refused for good; a small one (`refer`) is kept for
    /// later messages to refer to once it is committed.
    pub(super) async fn finish_resumed(
        &mut self,
        intake: Intake,
        too_big: bool,
        partial: Option<Partial>,
        refer: Option<Vec<u8>>,
    ) -> Result<(), Ended> {
        let refusal = if too_big {
            Some(reply::MESSAGE_TOO_BIG)
        } else if intake.line_too_long() {
            Some(reply::CONTENT_LINE_TOO_LONG)
        } else if intake.received_count() > MAX_RECEIVED {
            tracing::warn!(peer = %self.peer, "message refused: more than {MAX_RECEIVED} Received headers");
            Some(reply::LOOP_DETECTED)
        } else {
            None
        };
        if let Some(r) = refusal {
            if let Some(p) = partial {
                let _ = tokio::task::spawn_blocking(move || p.remove()).await;
            }
            self.reply(&r);
            return Ok(());
        }
        let committed = self.committed.clone();
        self.output.push_commit(tokio::spawn(async move {
            match intake.commit().await {
                Ok(id) => {
                    if let Some(content) = refer {
                        let mut kept = committed.lock().expect("not poisoned");
                        kept.push(id.to_string(), content);
                    }
                    if let Some(p) = partial {
                        let _ = tokio::task::spawn_blocking(move || p.remove()).await;
                    }
                    reply::OK.with_text(format!("Ok: queued as {id}"))
                }
                Err(e) => {
                    if let Some(p) = partial {
                        let _ = tokio::task::spawn_blocking(move || drop(p)).await;
                    }
                    local_failure(&e)
                }
            }
        }));
        if self.output.commits() >= MAX_COMMITS {
            self.send_replies().await?;
        }
        Ok(())
    }
}

/// A local failure never becomes 250: 452 when out of space, 451 otherwise. The cause
/// is logged; the peer sees only the class.
fn local_failure(e: &SpoolError) -> Reply {
    tracing::error!(error = %e, "message not accepted: local failure");
    if e.is_no_space() {
        reply::NO_SPACE
    } else {
        reply::LOCAL_ERROR
    }
}

/// `GET`, `POST`, `CONNECT`…: someone speaking HTTP to us, or a cross-protocol attack.
fn is_http(line: &[u8]) -> bool {
    [
        &b"GET "[..],
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"CONNECT ",
        b"OPTIONS ",
    ]
    .iter()
    .any(|verb| line.len() >= verb.len() && line[..verb.len()].eq_ignore_ascii_case(verb))
}
