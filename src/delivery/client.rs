//! Our SMTP client (README, "Delivering mail"): one connection carries many messages.
//! Opening it (banner, EHLO, TLS by policy, AUTH; or taking over a turned ODMR
//! connection) is `opening.rs`. Each transaction is one write when PIPELINING is
//! offered: MAIL, every RCPT, then `BDAT n LAST` with the content (CHUNKING), or DATA and, after the
//! 354, the dot-stuffed content. Every phase has its RFC 5321 §4.5.3.2 timeout; every
//! result goes through `outcome::classify`, recipient by recipient. Batches pipelined
//! across messages are in `batch.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::content::{Content, DotStuffer, PIECE};
use super::encode::xtext;
use super::outcome::{Classified, Event, Outcome, Phase, classify};
use crate::config::TlsPolicy;
use crate::net::{EitherTls, MaybeTls};
use crate::smtp::response::{Response, ResponseReader};
use crate::smtp::{BodyType, Ret, ReversePath};
use crate::spool::Recipient;

pub(crate) use super::opening::connect_error;
pub use super::opening::{Capabilities, connect};

pub type ClientStream = MaybeTls<EitherTls>;

/// Per-phase timeouts (RFC 5321 §4.5.3.2).
#[derive(Clone, Debug)]
pub struct ClientTimeouts {
    pub connect: Duration,
    pub banner: Duration,
    pub command: Duration,
    pub data_init: Duration,
    pub data_block: Duration,
    pub end_of_data: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            connect: Duration::from_secs(30),
            banner: Duration::from_secs(300),
            command: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            end_of_data: Duration::from_secs(600),
        }
    }
}

#[derive(Clone)]
pub struct ClientSettings {
    /// Our name in EHLO.
    pub helo: String,
    pub tls: TlsPolicy,
    /// Trust roots and provider for upstream certificates.
    pub tls_config: Arc<rustls::ClientConfig>,
    /// AUTH PLAIN credentials; only ever sent under TLS.
    pub credentials: Option<(String, String)>,
    /// Use CHUNKING (BDAT) when the upstream offers it.
    pub use_chunking: bool,
    /// The upstream is a ferrymail node: use XFERRY when it offers it.
    pub ferry: bool,
    pub timeouts: ClientTimeouts,
}

/// One message to send: envelope and content (CRLF lines, our `Received:` first).
pub struct Outgoing<'a> {
    /// Our queue id: with the content's hash, it names a resumable transfer.
    pub id: &'a str,
    pub sender: &'a ReversePath,
    pub recipients: &'a [Recipient],
    pub content: Content<'a>,
    pub body: Option<BodyType>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub envid: Option<&'a str>,
    pub ret: Option<Ret>,
}

pub struct Connection {
    pub(super) stream: ClientStream,
    pub(super) reader: ResponseReader,
    pub(super) caps: Capabilities,
    pub(super) timeouts: ClientTimeouts,
    pub(super) use_chunking: bool,
    /// XFERRY is wanted, where the upstream offers it.
    pub(super) ferry_wanted: bool,
    /// The upstream, for `last_host`.
    pub host: String,
    /// Its address.
    pub(super) peer: SocketAddr,
    /// The name the upstream gave in its greeting (RFC 5321 §4.3.1), for loop checks.
    pub greeting: String,
    /// The last EHLO's round trip: the link's delay, for the pipelining window.
    pub rtt: Duration,
    /// The pipelining window, as measured by earlier batches on this connection.
    pub(super) window: Option<super::window::Window>,
    /// The fit to a long thin link, as learnt by earlier writes on this connection.
    pub(super) fit: Option<super::link_fit::LinkFit>,
    /// Transactions written on this connection.
    pub(super) transactions: u64,
    /// XZSTD: small messages seen committed here, for later ones to refer to.
    pub(super) answered_small: crate::ferry::history::Answered,
}

/// The parts of XFERRY in use on a connection (docs/xferry.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ferry {
    /// Content is zstd-compressed (`XZSTD`).
    pub zstd: bool,
    /// Large content is sent resumably (`XRESUME`).
    pub resume: bool,
}

impl Connection {
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The fit to the link for a run of writes, to be given back with `keep_fit`: what
    /// earlier writes learnt of the link, or a fresh one; `None` on a short path (or
    /// not over TCP).
    pub(super) fn take_fit(&mut self) -> Option<super::link_fit::LinkFit> {
        use std::os::fd::AsRawFd;
        self.fit.take().or_else(|| {
            let tcp = self.stream.tcp()?;
            super::link_fit::LinkFit::new(tcp.as_raw_fd(), self.rtt)
        })
    }

    pub(super) fn keep_fit(&mut self, fit: Option<super::link_fit::LinkFit>) {
        self.fit = fit;
    }

    /// Content goes as `BDAT n LAST` (else DATA): CHUNKING offered, with PIPELINING so
    /// the chunk follows the RCPTs without a wait, and not turned off in the settings.
    pub fn uses_chunking(&self) -> bool {
        self.use_chunking && self.caps.chunking && self.caps.pipelining
    }

    /// What of XFERRY this connection uses: wanted by the route, offered by the
    /// upstream, and over CHUNKING (its content goes only by BDAT).
    pub fn ferry(&self) -> Ferry {
        let on = self.ferry_wanted && self.uses_chunking();
        Ferry {
            zstd: on && self.caps.ferry.zstd,
            resume: on && self.caps.ferry.resume,
        }
    }

    /// Writes `bytes` and flushes them.
    pub(super) async fn write(
        &mut self,
        bytes: &[u8],
        phase: Phase,
        timeout: Duration,
    ) -> Result<(), Classified> {
        let written = tokio::time::timeout(timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        });
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(phase, &Event::Broken(e.to_string()))),
            Err(_) => Err(classify(phase, &Event::Broken("write timed out".into()))),
        }
    }

    /// Writes `bytes` without flushing (a piece of content; `write` flushes at the end).
    pub(super) async fn write_raw(
        &mut self,
        bytes: &[u8],
        phase: Phase,
        timeout: Duration,
    ) -> Result<(), Classified> {
        let written = tokio::time::timeout(timeout, self.stream.write_all(bytes));
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(phase, &Event::Broken(e.to_string()))),
            Err(_) => Err(classify(phase, &Event::Broken("write timed out".into()))),
        }
    }

    pub(super) async fn read(
        &mut self,
        phase: Phase,
        timeout: Duration,
    ) -> Result<Response, Classified> {
        let mut buf = [0u8; 8192];
        loop {
            match self.reader.take_response() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(classify(phase, &Event::Protocol(e.to_string()))),
            }
            let n = match tokio::time::timeout(timeout, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    return Err(classify(phase, &Event::Broken("connection closed".into())));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(classify(phase, &Event::Broken(e.to_string()))),
                Err(_) => return Err(classify(phase, &Event::Broken("no reply in time".into()))),
            };
            self.reader.push(&buf[..n]);
        }
    }

    pub(super) async fn command(
        &mut self,
        line: &str,
        phase: Phase,
        timeout: Duration,
    ) -> Result<Response, Classified> {
        self.write(format!("{line}\r\n").as_bytes(), phase, timeout)
            .await?;
        self.read(phase, timeout).await
    }

    /// Sends one message; returns one outcome per recipient, in order. An `Err` means the
    /// connection is unusable (its outcome applies to every recipient).
    pub async fn send(&mut self, m: &Outgoing<'_>) -> Result<Vec<Classified>, Classified> {
        self.send_when(m, async {}).await
    }

    /// `send`, writing the content (which the upstream may accept) only once `ready` is
    /// done, while the envelope's replies are already on their way: the caller records
    /// the previous message meanwhile, and never has two accepted and unrecorded.
    pub async fn send_when(
        &mut self,
        m: &Outgoing<'_>,
        ready: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Classified>, Classified> {
        if let Some(refusal) = self.refusal(m) {
            return Ok(vec![classify(Phase::Mail, &refusal); m.recipients.len()]);
        }
        let chunking = self.uses_chunking();
        let mut ready = std::pin::pin!(ready);
        if chunking {
            ready.as_mut().await;
        }
        let t = self.timeouts.clone();
        let mut head = self.envelope(m);
        if chunking {
            head.push_str(&format!("BDAT {} LAST\r\n", m.content.len()));
        } else {
            head.push_str("DATA\r\n");
        }
        if self.caps.pipelining {
            self.write(head.as_bytes(), Phase::Mail, t.command).await?;
            if chunking {
                self.write_content(&m.content, None).await?;
            }
        }
        let mut lines = head.split_inclusive("\r\n");
        let mut next = async |conn: &mut Connection, phase: Phase, timeout: Duration| {
            if !conn.caps.pipelining {
                let line = lines.next().unwrap_or_default().to_owned();
                conn.write(line.as_bytes(), phase, timeout).await?;
            }
            conn.read(phase, timeout).await
        };
        let mail = next(self, Phase::Mail, t.command).await?;
        let mut outcomes = Vec::with_capacity(m.recipients.len());
        for _ in m.recipients {
            let r = next(self, Phase::Rcpt, t.command).await?;
            outcomes.push(classify(Phase::Rcpt, &Event::Reply(r)));
        }
        if !mail.is_positive() {
            // The pipelined DATA or BDAT still gets a reply: read it, then report MAIL's.
            if self.caps.pipelining {
                let _ = self.read(Phase::Data, t.data_init).await?;
            }
            return Ok(vec![
                classify(Phase::Mail, &Event::Reply(mail));
                m.recipients.len()
            ]);
        }
        let accepted = outcomes.iter().any(|o| o.outcome == Outcome::Delivered);
        let end = if chunking {
            self.read(Phase::EndOfData, t.end_of_data).await?
        } else {
            let go = next(self, Phase::Data, t.data_init).await?;
            ready.as_mut().await;
            if go.code != 354 {
                self.reset().await?;
                return Ok(finish(
                    outcomes,
                    accepted.then(|| classify(Phase::Data, &Event::Reply(go))),
                ));
            }
            self.write_content(&m.content, Some(DotStuffer::default()))
                .await?;
            self.read(Phase::EndOfData, t.end_of_data).await?
        };
        if !accepted {
            // The upstream may keep the MAIL open after refusing every recipient.
            self.reset().await?;
            return Ok(outcomes);
        }
        if !end.is_positive() {
            self.reset().await?;
        }
        Ok(finish(
            outcomes,
            Some(classify(Phase::EndOfData, &Event::Reply(end))),
        ))
    }

    /// Writes `content` a piece at a time, each under the data block timeout (RFC 5321
    /// §4.5.3.2.5); dot-stuffed and terminated when `stuffer` is given (DATA).
    async fn write_content(
        &mut self,
        content: &Content<'_>,
        mut stuffer: Option<DotStuffer>,
    ) -> Result<(), Classified> {
        let timeout = self.timeouts.data_block;
        let mut reader = content
            .reader()
            .await
            .map_err(|e| super::content::unreadable(&e))?;
        let mut piece = vec![0u8; PIECE];
        let mut stuffed = Vec::new();
        loop {
            let n = reader
                .read(&mut piece)
                .await
                .map_err(|e| super::content::unreadable(&e))?;
            if n == 0 {
                break;
            }
            match &mut stuffer {
                Some(s) => {
                    stuffed.clear();
                    s.push(&piece[..n], &mut stuffed);
                    self.write_raw(&stuffed, Phase::EndOfData, timeout).await?;
                }
                None => {
                    self.write_raw(&piece[..n], Phase::EndOfData, timeout)
                        .await?
                }
            }
        }
        if let Some(s) = stuffer {
            stuffed.clear();
            s.finish(&mut stuffed);
            self.write_raw(&stuffed, Phase::EndOfData, timeout).await?;
        }
        self.write(b"", Phase::EndOfData, timeout).await
    }

    /// What the upstream cannot take of this message, before any command is sent.
    pub(super) fn refusal(&self, m: &Outgoing<'_>) -> Option<Event> {
        let unsupported = |reason: &str, status| {
            Some(Event::Unsupported {
                reason: reason.to_owned(),
                status,
            })
        };
        if m.smtputf8 && !self.caps.smtputf8 {
            return unsupported(
                "the message needs SMTPUTF8, which the upstream lacks",
                "5.6.7",
            );
        }
        if m.eight_bit && !self.caps.eight_bit_mime {
            return unsupported("8-bit content, and the upstream lacks 8BITMIME", "5.6.3");
        }
        if self.caps.size.is_some_and(|limit| m.content.len() > limit) {
            return unsupported("larger than the upstream's SIZE limit", "5.3.4");
        }
        None
    }

    pub(super) fn mail_line(&self, m: &Outgoing<'_>) -> String {
        let mut line = format!("MAIL FROM:<{}>", m.sender);
        if self.caps.size.is_some() || self.caps.chunking {
            line.push_str(&format!(" SIZE={}", m.content.len()));
        }
        if m.eight_bit || m.body == Some(BodyType::EightBitMime) {
            line.push_str(" BODY=8BITMIME");
        }
        if m.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            match m.ret {
                Some(Ret::Full) => line.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = m.envid {
                line.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        line.push_str("\r\n");
        line
    }

    /// MAIL, then every RCPT, as they are written pipelined.
    pub(super) fn envelope(&self, m: &Outgoing<'_>) -> String {
        let mut head = self.mail_line(m);
        for r in m.recipients {
            head.push_str(&self.rcpt_line(r));
        }
        head
    }

    pub(super) fn rcpt_line(&self, r: &Recipient) -> String {
        let mut line = format!("RCPT TO:<{}>", r.address);
        if self.caps.dsn {
            if let Some(notify) = &r.notify {
                line.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some(orcpt) = &r.orcpt {
                line.push_str(&format!(" ORCPT={}", xtext(orcpt)));
            }
        }
        line.push_str("\r\n");
        line
    }

    pub(super) async fn reset(&mut self) -> Result<(), Classified> {
        let timeout = self.timeouts.command;
        self.command("RSET", Phase::Mail, timeout).await.map(|_| ())
    }

    /// Ends the session politely; errors no longer matter.
    pub async fn quit(mut self) {
        let timeout = self.timeouts.command.min(Duration::from_secs(10));
        let _ = self.command("QUIT", Phase::Mail, timeout).await;
        let _ = self.stream.shutdown().await;
    }
}

/// `envelope` (MAIL, then RCPTs) with `params` (each with its leading space) added to
/// its MAIL line.
pub(super) fn with_mail_params(envelope: &str, params: &str) -> String {
    envelope.replacen("\r\n", &format!("{params}\r\n"), 1)
}

pub(super) fn expect(phase: Phase, r: &Response, code: u16) -> Result<(), Classified> {
    if r.code == code {
        Ok(())
    } else {
        Err(classify(phase, &Event::UnexpectedReply(r.clone())))
    }
}

/// Recipients accepted at RCPT take the transaction's final outcome.
pub(super) fn finish(rcpts: Vec<Classified>, end: Option<Classified>) -> Vec<Classified> {
    rcpts
        .into_iter()
        .map(|r| match (&end, r.outcome) {
            (Some(end), Outcome::Delivered) => end.clone(),
            _ => r,
        })
        .collect()
}
