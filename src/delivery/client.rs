//! Our SMTP client (issue 4; README, "Delivering mail"): one connection carries many messages. It reads
//! the banner, says EHLO, goes to TLS by policy (never AUTH or mail in clear when TLS is
//! required; bytes received before the handshake are dropped: response injection), and
//! authenticates once. Each transaction is one write when PIPELINING is offered: MAIL,
//! every RCPT, then `BDAT n LAST` with the content (CHUNKING), or DATA and, after the
//! 354, the dot-stuffed content. Every phase has its RFC 5321 §4.5.3.2 timeout; every
//! result goes through `outcome::classify`, recipient by recipient. Batches pipelined
//! across messages are in `batch.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::content::{Content, DotStuffer, PIECE};
use super::encode::xtext;
use super::outcome::{Classified, Event, Outcome, Phase, Scope, classify};
use crate::config::TlsPolicy;
use crate::net::{EitherTls, MaybeTls};
use crate::smtp::response::{Response, ResponseReader};
use crate::spool::{BodyType, Recipient, Ret};

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
    pub timeouts: ClientTimeouts,
}

/// What the upstream said it can do (RFC 5321 §4.1.1.1 EHLO keywords).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub chunking: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    /// RFC 2195 CRAM-MD5: the secret never crosses the wire, so it may go without TLS.
    pub auth_cram_md5: bool,
    /// RFC 2645 ATRN (an ODMR hub).
    pub atrn: bool,
    /// RFC 1870 SIZE limit (0 or absent: none declared).
    pub size: Option<u64>,
}

impl Capabilities {
    fn from_ehlo(r: &Response) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in r.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "CHUNKING" => caps.chunking = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "AUTH" => {
                    for m in words {
                        caps.auth_plain |= m.eq_ignore_ascii_case("PLAIN");
                        caps.auth_cram_md5 |= m.eq_ignore_ascii_case("CRAM-MD5");
                    }
                }
                "ATRN" => caps.atrn = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                _ => {}
            }
        }
        caps
    }
}

/// One message to send: envelope and content (CRLF lines, our `Received:` first).
pub struct Outgoing<'a> {
    pub sender: &'a str,
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
    caps: Capabilities,
    pub(super) timeouts: ClientTimeouts,
    use_chunking: bool,
    /// The upstream, for `last_host`.
    pub host: String,
    /// Its address.
    peer: SocketAddr,
    /// The name the upstream gave in its greeting (RFC 5321 §4.3.1), for loop checks.
    pub greeting: String,
    /// The last EHLO's round trip: the link's delay, for the pipelining window.
    pub rtt: Duration,
    /// The pipelining window, as measured by earlier batches on this connection.
    pub(super) window: Option<super::window::Window>,
}

type Step<T> = Result<T, Classified>;

impl Connection {
    /// Connects, reads the banner, says EHLO, does TLS by policy, and authenticates.
    pub async fn open(addr: SocketAddr, server_name: &str, s: &ClientSettings) -> Step<Connection> {
        let tcp = connect(addr, s.timeouts.connect)
            .await
            .map_err(|e| classify(Phase::Connect, &Event::ConnectFailed(connect_error(&e))))?;
        Connection::start(tcp, addr, server_name, s).await
    }

    /// `open` over a TCP connection already made (by `connect`).
    pub async fn start(
        tcp: TcpStream,
        addr: SocketAddr,
        server_name: &str,
        s: &ClientSettings,
    ) -> Step<Connection> {
        let mut conn = Connection {
            stream: MaybeTls::Plain(tcp),
            reader: ResponseReader::new(),
            caps: Capabilities::default(),
            timeouts: s.timeouts.clone(),
            use_chunking: s.use_chunking,
            host: format!("{server_name}[{addr}]"),
            peer: addr,
            greeting: String::new(),
            rtt: Duration::ZERO,
            window: None,
        };
        if s.tls == TlsPolicy::Implicit {
            conn.handshake(server_name, s).await?;
        }
        let banner = conn.read(Phase::Banner, s.timeouts.banner).await?;
        expect(Phase::Banner, &banner, 220)?;
        conn.greeting = banner
            .lines
            .first()
            .and_then(|l| l.split_ascii_whitespace().next())
            .unwrap_or_default()
            .to_ascii_lowercase();
        conn.ehlo(&s.helo).await?;
        let wants_tls = matches!(s.tls, TlsPolicy::Required | TlsPolicy::Opportunistic);
        if wants_tls && !conn.stream.is_tls() {
            if conn.caps.starttls {
                let r = conn
                    .command("STARTTLS", Phase::StartTls, s.timeouts.command)
                    .await?;
                if r.code == 220 {
                    // Anything the server sent after its 220 is not to be trusted.
                    conn.reader.clear();
                    conn.handshake(server_name, s).await?;
                    conn.ehlo(&s.helo).await?;
                } else if s.tls == TlsPolicy::Required {
                    return Err(classify(Phase::StartTls, &Event::TlsPolicy(r.summary())));
                }
            } else if s.tls == TlsPolicy::Required {
                return Err(classify(
                    Phase::StartTls,
                    &Event::TlsPolicy("STARTTLS not offered".into()),
                ));
            }
        }
        if let Some((user, password)) = &s.credentials {
            conn.authenticate(user, password, s).await?;
        }
        Ok(conn)
    }

    /// AUTH PLAIN under TLS; without TLS only CRAM-MD5 (RFC 2195), which sends no
    /// password, when the server offers it (and never when the policy wants TLS).
    async fn authenticate(&mut self, user: &str, password: &str, s: &ClientSettings) -> Step<()> {
        let engine = base64::engine::general_purpose::STANDARD;
        if !self.stream.is_tls() {
            if s.tls != TlsPolicy::None || !self.caps.auth_cram_md5 {
                let refusal = Event::TlsPolicy("refusing to send credentials without TLS".into());
                return Err(classify(Phase::Auth, &refusal));
            }
            let r = self
                .command("AUTH CRAM-MD5", Phase::Auth, s.timeouts.command)
                .await?;
            expect(Phase::Auth, &r, 334)?;
            let challenge = r
                .lines
                .first()
                .and_then(|l| engine.decode(l.trim()).ok())
                .unwrap_or_default();
            let digest = crate::smtp::cram_md5::hmac_md5_hex(password.as_bytes(), &challenge);
            let answer = engine.encode(format!("{user} {digest}"));
            let r = self
                .command(&answer, Phase::Auth, s.timeouts.command)
                .await?;
            return expect(Phase::Auth, &r, 235);
        }
        let token = engine.encode(format!("\0{user}\0{password}"));
        let r = self
            .command(
                &format!("AUTH PLAIN {token}"),
                Phase::Auth,
                s.timeouts.command,
            )
            .await?;
        expect(Phase::Auth, &r, 235)
    }

    /// RFC 2645 §4.2: asks the hub to turn the connection round for `domains` (none:
    /// all of ours). Returns its reply; after a 250 the connection is the hub's to
    /// deliver over (`into_stream`).
    pub async fn atrn(&mut self, domains: &[String]) -> Step<Response> {
        let timeout = self.timeouts.command;
        let command = if domains.is_empty() {
            "ATRN".to_owned()
        } else {
            format!("ATRN {}", domains.join(","))
        };
        self.command(&command, Phase::Atrn, timeout).await
    }

    /// The upstream's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection itself, after a turn: nothing the hub sent may be waiting unread
    /// (it must wait for our greeting), else `None`.
    pub fn into_stream(self) -> Option<ClientStream> {
        self.reader.is_empty().then_some(self.stream)
    }

    /// After an ODMR turn (RFC 2645 §4.3): on the connection the station made, which is
    /// now ours to deliver over, read its greeting and say EHLO. TLS is what the session
    /// had before the turn; no AUTH (the station authenticated to us). `host` names the
    /// station in logs and `last_host`.
    pub async fn turned(
        stream: ClientStream,
        host: String,
        peer: SocketAddr,
        s: &ClientSettings,
    ) -> Step<Connection> {
        // The station's connection was accepted, not made: watch it as one of ours.
        if let Some(tcp) = stream.tcp() {
            watch_peer(tcp);
        }
        let mut conn = Connection {
            stream,
            reader: ResponseReader::new(),
            caps: Capabilities::default(),
            timeouts: s.timeouts.clone(),
            use_chunking: s.use_chunking,
            host,
            peer,
            greeting: String::new(),
            rtt: Duration::ZERO,
            window: None,
        };
        let banner = conn.read(Phase::Banner, s.timeouts.banner).await?;
        expect(Phase::Banner, &banner, 220)?;
        conn.greeting = banner
            .lines
            .first()
            .and_then(|l| l.split_ascii_whitespace().next())
            .unwrap_or_default()
            .to_ascii_lowercase();
        conn.ehlo(&s.helo).await?;
        Ok(conn)
    }

    /// RFC 1985: asks the upstream to start delivering what it holds for `node` (a
    /// domain, or `@domain` for its subdomains too). Returns its reply.
    pub async fn etrn(&mut self, node: &str) -> Step<Response> {
        let timeout = self.timeouts.command;
        self.command(&format!("ETRN {node}"), Phase::Etrn, timeout)
            .await
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Content goes as `BDAT n LAST` (else DATA): CHUNKING offered, with PIPELINING so
    /// the chunk follows the RCPTs without a wait, and not turned off in the settings.
    pub fn uses_chunking(&self) -> bool {
        self.use_chunking && self.caps.chunking && self.caps.pipelining
    }

    async fn handshake(&mut self, server_name: &str, s: &ClientSettings) -> Step<()> {
        let tls_error = |why: String| classify(Phase::StartTls, &Event::TlsPolicy(why));
        let name =
            ServerName::try_from(server_name.to_owned()).map_err(|e| tls_error(e.to_string()))?;
        let tcp = self
            .stream
            .take_plain()
            .ok_or_else(|| tls_error("TLS already active".into()))?;
        let connector = TlsConnector::from(s.tls_config.clone());
        match tokio::time::timeout(s.timeouts.command, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = MaybeTls::Tls(Box::new(EitherTls::Client(tls)));
                Ok(())
            }
            Ok(Err(e)) => Err(tls_error(e.to_string())),
            Err(_) => Err(tls_error("handshake timed out".into())),
        }
    }

    async fn ehlo(&mut self, helo: &str) -> Step<()> {
        let asked = std::time::Instant::now();
        let r = self
            .command(&format!("EHLO {helo}"), Phase::Ehlo, self.timeouts.command)
            .await?;
        self.rtt = asked.elapsed();
        expect(Phase::Ehlo, &r, 250)?;
        self.caps = Capabilities::from_ehlo(&r);
        Ok(())
    }

    /// Writes `bytes` and flushes them.
    async fn write(&mut self, bytes: &[u8], phase: Phase, timeout: Duration) -> Step<()> {
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
    async fn write_raw(&mut self, bytes: &[u8], phase: Phase, timeout: Duration) -> Step<()> {
        let written = tokio::time::timeout(timeout, self.stream.write_all(bytes));
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(phase, &Event::Broken(e.to_string()))),
            Err(_) => Err(classify(phase, &Event::Broken("write timed out".into()))),
        }
    }

    async fn read(&mut self, phase: Phase, timeout: Duration) -> Step<Response> {
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

    async fn command(&mut self, line: &str, phase: Phase, timeout: Duration) -> Step<Response> {
        self.write(format!("{line}\r\n").as_bytes(), phase, timeout)
            .await?;
        self.read(phase, timeout).await
    }

    /// Sends one message; returns one outcome per recipient, in order. An `Err` means the
    /// connection is unusable (its outcome applies to every recipient).
    pub async fn send(&mut self, m: &Outgoing<'_>) -> Step<Vec<Classified>> {
        self.send_when(m, async {}).await
    }

    /// `send`, writing the content (which the upstream may accept) only once `ready` is
    /// done, while the envelope's replies are already on their way: the caller records
    /// the previous message meanwhile, and never has two accepted and unrecorded.
    pub async fn send_when(
        &mut self,
        m: &Outgoing<'_>,
        ready: impl std::future::Future<Output = ()>,
    ) -> Step<Vec<Classified>> {
        if let Some(refusal) = self.refusal(m) {
            return Ok(vec![classify(Phase::Mail, &refusal); m.recipients.len()]);
        }
        let chunking = self.uses_chunking();
        let mut ready = std::pin::pin!(ready);
        if chunking {
            ready.as_mut().await;
        }
        let t = self.timeouts.clone();
        let mut head = self.mail_line(m);
        for r in m.recipients {
            head.push_str(&self.rcpt_line(r));
        }
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
    ) -> Step<()> {
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

    async fn reset(&mut self) -> Step<()> {
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

/// How long unacknowledged data may sit before the kernel gives up on a connection
/// (`TCP_USER_TIMEOUT`), and when an idle one is probed: a dead link shows in seconds,
/// not after the default 15 minutes of retransmissions.
const USER_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A TCP connection to an upstream, with keepalive and `TCP_USER_TIMEOUT` set.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(connected) => connected?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    watch_peer(&tcp);
    Ok(tcp)
}

/// Keepalive and `TCP_USER_TIMEOUT` on a connection we deliver over, so a dead peer
/// shows in seconds.
fn watch_peer(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(3);
    let _ = sock.set_tcp_keepalive(&keepalive);
    let _ = sock.set_tcp_user_timeout(Some(USER_TIMEOUT));
}

/// A connect error as the queue listing shows it.
pub fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

fn expect(phase: Phase, r: &Response, code: u16) -> Step<()> {
    if r.code == code {
        Ok(())
    } else {
        let mut c = classify(phase, &Event::Reply(r.clone()));
        if c.outcome == Outcome::Delivered {
            // A positive reply other than the one the dialogue needs: temporary.
            c = Classified {
                outcome: Outcome::Deferred,
                scope: Scope::Connection,
                ..c
            };
        }
        Err(c)
    }
}

/// Recipients accepted at RCPT take the transaction's final outcome.
fn finish(rcpts: Vec<Classified>, end: Option<Classified>) -> Vec<Classified> {
    rcpts
        .into_iter()
        .map(|r| match (&end, r.outcome) {
            (Some(end), Outcome::Delivered) => end.clone(),
            _ => r,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        let mut r = ResponseReader::new();
        r.push(b"250-hub.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-chunking\r\n250-AUTH LOGIN PLAIN\r\n250 STARTTLS\r\n");
        let caps = Capabilities::from_ehlo(&r.take_response().unwrap().unwrap());
        assert!(caps.pipelining && caps.chunking && caps.auth_plain && caps.starttls);
        assert_eq!(caps.size, Some(1000));
        assert!(!caps.smtputf8 && !caps.dsn && !caps.eight_bit_mime);
    }
}
