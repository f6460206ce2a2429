//! Opening the client's SMTP session (RFC 5321 §3.1, §4.1.1.1): a TCP connection with
//! keepalive and `TCP_USER_TIMEOUT` (a dead link shows in seconds), the banner, EHLO and
//! what it offers (`Capabilities`), TLS by policy (never AUTH or mail in clear when TLS
//! is required; bytes received before the handshake are dropped: response injection),
//! and AUTH once. Also the other ways a session starts or ends here: taking over a
//! connection an ODMR station made (RFC 2645), asking a hub for a turn (ATRN) or for a
//! flush (ETRN, RFC 1985).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::client::{ClientSettings, ClientStream, Connection, expect};
use super::outcome::{Classified, Event, Phase, classify};
use crate::config::TlsPolicy;
use crate::net::{EitherTls, MaybeTls};
use crate::smtp::response::{Response, ResponseReader};

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
    /// XFERRY, between ferrymail nodes (docs/xferry.md): what the upstream offers.
    pub ferry: super::client::Ferry,
}

impl Capabilities {
    pub(super) fn from_ehlo(r: &Response) -> Capabilities {
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
                crate::ferry::KEYWORD => {
                    for w in words {
                        caps.ferry.zstd |= w.eq_ignore_ascii_case("ZSTD");
                        caps.ferry.resume |= w.eq_ignore_ascii_case("RESUME");
                    }
                }
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                _ => {}
            }
        }
        caps
    }
}

impl Connection {
    /// Connects, reads the banner, says EHLO, does TLS by policy, and authenticates.
    pub async fn open(
        addr: SocketAddr,
        server_name: &str,
        s: &ClientSettings,
    ) -> Result<Connection, Classified> {
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
    ) -> Result<Connection, Classified> {
        let host = format!("{server_name}[{addr}]");
        let mut conn = Connection::over(MaybeTls::Plain(tcp), host, addr, s);
        if s.tls == TlsPolicy::Implicit {
            conn.handshake(server_name, s).await?;
        }
        conn.greet(s).await?;
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
    async fn authenticate(
        &mut self,
        user: &str,
        password: &str,
        s: &ClientSettings,
    ) -> Result<(), Classified> {
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
    pub async fn atrn(&mut self, domains: &[String]) -> Result<Response, Classified> {
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
    pub(crate) fn into_stream(self) -> Option<ClientStream> {
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
    ) -> Result<Connection, Classified> {
        // The station's connection was accepted, not made: watch it as one of ours.
        if let Some(tcp) = stream.tcp() {
            watch_peer(tcp);
        }
        let mut conn = Connection::over(stream, host, peer, s);
        conn.greet(s).await?;
        Ok(conn)
    }

    /// A connection over `stream`, not yet greeted.
    fn over(stream: ClientStream, host: String, peer: SocketAddr, s: &ClientSettings) -> Self {
        Connection {
            stream,
            reader: ResponseReader::new(),
            caps: Capabilities::default(),
            timeouts: s.timeouts.clone(),
            use_chunking: s.use_chunking,
            ferry_wanted: s.ferry,
            host,
            peer,
            greeting: String::new(),
            rtt: Duration::ZERO,
            window: None,
            fit: None,
            transactions: 0,
            answered_small: Default::default(),
        }
    }

    /// The server's 220 banner (its name kept for loop checks), then EHLO.
    async fn greet(&mut self, s: &ClientSettings) -> Result<(), Classified> {
        let banner = self.read(Phase::Banner, s.timeouts.banner).await?;
        expect(Phase::Banner, &banner, 220)?;
        self.greeting = banner
            .lines
            .first()
            .and_then(|l| l.split_ascii_whitespace().next())
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.ehlo(&s.helo).await
    }

    /// RFC 1985: asks the upstream to start delivering what it holds for `node` (a
    /// domain, or `@domain` for its subdomains too). Returns its reply.
    pub async fn etrn(&mut self, node: &str) -> Result<Response, Classified> {
        let timeout = self.timeouts.command;
        self.command(&format!("ETRN {node}"), Phase::Etrn, timeout)
            .await
    }

    async fn handshake(&mut self, server_name: &str, s: &ClientSettings) -> Result<(), Classified> {
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

    async fn ehlo(&mut self, helo: &str) -> Result<(), Classified> {
        let asked = std::time::Instant::now();
        let r = self
            .command(&format!("EHLO {helo}"), Phase::Ehlo, self.timeouts.command)
            .await?;
        self.rtt = asked.elapsed();
        expect(Phase::Ehlo, &r, 250)?;
        self.caps = Capabilities::from_ehlo(&r);
        Ok(())
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
pub(crate) fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
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
