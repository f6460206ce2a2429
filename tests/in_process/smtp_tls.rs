//! TLS on the listener with a real certificate (rcgen) and a real rustls client:
//! STARTTLS, the CVE-2011-0411 injection (plaintext pipelined after STARTTLS is never
//! answered inside TLS), state reset after TLS, implicit TLS (smtps), reloading, and AUTH
//! on submission: only under TLS, same reply for unknown user and bad password, limits.

use std::sync::Arc;
use std::time::Duration;

use crate::common;

use common::listener::{context, open_spool, serve};
use ferrymail::config::ListenKind;
use ferrymail::server::{AuthContext, ServerContext, ServerTls, SessionConfig, Timeouts};
use ferrymail::spool::{IndexReader, Layout, RealFs};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

struct Fixture {
    addr: std::net::SocketAddr,
    layout: Layout,
    cert: CertificateDer<'static>,
    tls: Arc<ServerTls>,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

fn write_cert(dir: &std::path::Path) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec!["edge.test".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    ck.cert.der().clone()
}

async fn start(kind: ListenKind) -> Fixture {
    start_with(kind, None).await
}

/// With `users`, AUTH is offered (under TLS) and relay_networks is empty, so only
/// authenticated clients may relay.
async fn start_with(kind: ListenKind, users: Option<&[(&str, &str)]>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let tls = Arc::new(
        ServerTls::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap(),
    );
    let mut text = format!(
        "hostname = \"edge.test\"\nspool = \"{}\"\n",
        dir.path().join("spool").display()
    );
    let auth = users.map(|users| {
        let lines: Vec<String> = users
            .iter()
            .map(|(name, password)| {
                format!(
                    "{name}:{}",
                    ferrymail::server::auth::hash_password(password).unwrap()
                )
            })
            .collect();
        let file = dir.path().join("users");
        std::fs::write(&file, lines.join("\n")).unwrap();
        text.push_str("[accept]\nrelay_networks = []\nlocal_domains = [\"ours.example\"]\n");
        Arc::new(AuthContext::new(
            ferrymail::server::auth::Users::load(&file).unwrap(),
        ))
    });
    let config = ferrymail::config::parse(&text, &dir.path().join("f.toml")).unwrap();
    let layout = Layout::new(&config.spool);
    let spool = open_spool(&layout, Arc::new(RealFs)).await;
    let shutdown = CancellationToken::new();
    // The certificate is handed over here rather than through [tls].
    let session = SessionConfig {
        tls_available: true,
        auth_available: auth.is_some(),
        ..SessionConfig::from_config(&config, kind)
    };
    let (addr, _) = serve(ServerContext {
        timeouts: Timeouts {
            command: Duration::from_secs(10),
            data: Duration::from_secs(10),
            session: Duration::from_secs(60),
            ..Timeouts::default()
        },
        tls: Some(tls.clone()),
        auth,
        ..context(session, spool, shutdown.clone())
    })
    .await;
    Fixture {
        addr,
        layout,
        cert,
        tls,
        dir,
        shutdown,
    }
}

fn connector(cert: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = ferrymail::delivery::settings::tls_client_config(roots).unwrap();
    TlsConnector::from(config)
}

/// Reads one whole reply, all lines.
async fn reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed; so far {lines:?}");
        let done = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.trim_end().to_owned());
        if done {
            return lines;
        }
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>, line: &str) -> Vec<String> {
    s.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    reply(s).await
}

fn queued(layout: &Layout) -> usize {
    IndexReader::open(layout)
        .unwrap()
        .map_or(0, |r| r.all_ids().unwrap().len())
}

#[tokio::test]
async fn starttls_then_mail_and_injection_is_ignored() {
    let f = start(ListenKind::Smtp).await;
    let mut plain = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
    assert!(reply(&mut plain).await[0].starts_with("220 "));
    let ehlo = send(&mut plain, "EHLO client.example").await;
    assert!(
        ehlo.iter()
            .any(|l| l == "250-STARTTLS" || l == "250 STARTTLS"),
        "{ehlo:?}"
    );
    assert!(send(&mut plain, "MAIL FROM:<a@client.example>").await[0].starts_with("250"));
    // CVE-2011-0411: RSET pipelined in the same write as STARTTLS.
    plain
        .get_mut()
        .write_all(b"STARTTLS\r\nRSET\r\n")
        .await
        .unwrap();
    assert!(reply(&mut plain).await[0].starts_with("220 2.0.0"));
    let tcp = plain.into_inner();
    let tls = connector(&f.cert)
        .connect(ServerName::try_from("edge.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut tls = BufReader::new(tls);
    // The first reply inside TLS answers our EHLO, not the injected RSET.
    let ehlo = send(&mut tls, "EHLO client.example").await;
    assert!(ehlo[0].starts_with("250-edge.test"), "{ehlo:?}");
    assert!(
        !ehlo.iter().any(|l| l.contains("STARTTLS")),
        "STARTTLS offered again: {ehlo:?}"
    );
    // The MAIL from before TLS is gone.
    assert!(send(&mut tls, "RCPT TO:<b@example.net>").await[0].starts_with("503"));
    assert!(send(&mut tls, "STARTTLS").await[0].starts_with("503"));
    assert!(send(&mut tls, "MAIL FROM:<a@client.example>").await[0].starts_with("250"));
    assert!(send(&mut tls, "RCPT TO:<b@example.net>").await[0].starts_with("250"));
    assert!(send(&mut tls, "DATA").await[0].starts_with("354"));
    let done = send(&mut tls, "Subject: over TLS\r\n\r\nhi\r\n.").await;
    assert!(done[0].starts_with("250 2.0.0 Ok: queued as"), "{done:?}");
    assert_eq!(queued(&f.layout), 1);
    let ids = IndexReader::open(&f.layout)
        .unwrap()
        .unwrap()
        .all_ids()
        .unwrap();
    let file = std::fs::read(f.layout.message_path(ids[0])).unwrap();
    assert!(
        String::from_utf8_lossy(&file).contains("with ESMTPS id"),
        "Received header names TLS"
    );
    f.shutdown.cancel();
}

#[tokio::test]
async fn smtps_speaks_tls_first_and_a_certificate_reload_takes_effect() {
    let f = start(ListenKind::Smtps).await;
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let tls = connector(&f.cert)
        .connect(ServerName::try_from("edge.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut tls = BufReader::new(tls);
    assert!(reply(&mut tls).await[0].starts_with("220 edge.test"));
    let ehlo = send(&mut tls, "EHLO client.example").await;
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert!(send(&mut tls, "QUIT").await[0].starts_with("221"));

    // A new certificate after reload: clients trusting only the old one now fail.
    let new_cert = write_cert(f.dir.path());
    f.tls.reload().unwrap();
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    assert!(
        connector(&f.cert)
            .connect(ServerName::try_from("edge.test").unwrap(), tcp)
            .await
            .is_err()
    );
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let tls = connector(&new_cert)
        .connect(ServerName::try_from("edge.test").unwrap(), tcp)
        .await
        .unwrap();
    assert!(reply(&mut BufReader::new(tls)).await[0].starts_with("220"));
    // A broken file does not replace the working certificate.
    std::fs::write(f.dir.path().join("cert.pem"), b"not a certificate").unwrap();
    assert!(f.tls.reload().is_err());
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    assert!(
        connector(&new_cert)
            .connect(ServerName::try_from("edge.test").unwrap(), tcp)
            .await
            .is_ok()
    );
    f.shutdown.cancel();
}

#[tokio::test]
async fn a_plaintext_client_on_smtps_gets_nothing() {
    let f = start(ListenKind::Smtps).await;
    let mut tcp = TcpStream::connect(f.addr).await.unwrap();
    tcp.write_all(b"EHLO client.example\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut buf),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("250"),
        "plaintext answered: {buf:?}"
    );
    f.shutdown.cancel();
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Connects, does STARTTLS and EHLO; returns the TLS stream.
async fn tls_session(f: &Fixture) -> BufReader<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut plain = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
    reply(&mut plain).await;
    send(&mut plain, "EHLO client.example").await;
    assert!(send(&mut plain, "STARTTLS").await[0].starts_with("220"));
    let tls = connector(&f.cert)
        .connect(
            ServerName::try_from("edge.test").unwrap(),
            plain.into_inner(),
        )
        .await
        .unwrap();
    let mut tls = BufReader::new(tls);
    let ehlo = send(&mut tls, "EHLO client.example").await;
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    tls
}

#[tokio::test]
async fn submission_requires_tls_then_auth_and_then_relays() {
    let f = start_with(ListenKind::Submission, Some(&[("alice", "correct horse")])).await;
    let mut plain = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
    reply(&mut plain).await;
    let ehlo = send(&mut plain, "EHLO client.example").await;
    assert!(
        !ehlo.iter().any(|l| l.contains("AUTH")),
        "AUTH offered in clear: {ehlo:?}"
    );
    let creds = b64("\0alice\0correct horse");
    assert!(send(&mut plain, &format!("AUTH PLAIN {creds}")).await[0].starts_with("530 5.7.0"));
    assert!(send(&mut plain, "MAIL FROM:<alice@client.example>").await[0].starts_with("530"));
    drop(plain);

    let mut tls = tls_session(&f).await;
    assert!(
        send(&mut tls, "MAIL FROM:<alice@client.example>").await[0].starts_with("530"),
        "MAIL before AUTH"
    );
    let wrong = send(&mut tls, &format!("AUTH PLAIN {}", b64("\0alice\0wrong"))).await;
    let unknown = send(
        &mut tls,
        &format!("AUTH PLAIN {}", b64("\0mallory\0correct horse")),
    )
    .await;
    assert!(wrong[0].starts_with("535 5.7.8"), "{wrong:?}");
    assert_eq!(
        wrong, unknown,
        "unknown user and wrong password must look the same"
    );
    // AUTH LOGIN, challenge by challenge.
    assert_eq!(send(&mut tls, "AUTH LOGIN").await, ["334 VXNlcm5hbWU6"]);
    assert_eq!(send(&mut tls, &b64("alice")).await, ["334 UGFzc3dvcmQ6"]);
    assert!(send(&mut tls, &b64("correct horse")).await[0].starts_with("235 2.7.0"));
    assert!(
        send(&mut tls, "AUTH PLAIN x").await[0].starts_with("503"),
        "AUTH twice"
    );
    assert!(send(&mut tls, "MAIL FROM:<alice@client.example>").await[0].starts_with("250"));
    for rcpt in [
        "<victim@elsewhere.example>",
        "<user%elsewhere.example@[192.0.2.1]>",
        "<@ours.example:user@elsewhere.example>",
    ] {
        assert!(
            send(&mut tls, &format!("RCPT TO:{rcpt}")).await[0].starts_with("250"),
            "{rcpt} refused when authenticated"
        );
    }
    assert!(send(&mut tls, "DATA").await[0].starts_with("354"));
    assert!(
        send(&mut tls, "Subject: submitted\r\n\r\nhi\r\n.").await[0].starts_with("250 2.0.0 Ok")
    );
    let ids = IndexReader::open(&f.layout)
        .unwrap()
        .unwrap()
        .all_ids()
        .unwrap();
    let file = String::from_utf8_lossy(&std::fs::read(f.layout.message_path(ids[0])).unwrap())
        .into_owned();
    assert!(
        file.contains("with ESMTPSA id") && file.contains("\"auth\":\"alice\""),
        "{file}"
    );
    // An authenticated submission lacking them gets Date and Message-ID, before the body.
    let header_end = file.find("\r\n\r\nhi\r\n").expect("body");
    let message_id = format!("\r\nMessage-ID: <{}@edge.test>\r\n", ids[0]);
    assert!(file[..header_end + 2].contains(&message_id), "{file}");
    assert!(file[..header_end].contains("\r\nDate: "), "{file}");
    f.shutdown.cancel();
}

#[tokio::test]
async fn auth_abuse_is_bounded() {
    let f = start_with(ListenKind::Smtp, Some(&[("alice", "correct horse")])).await;
    let mut tls = tls_session(&f).await;
    assert!(send(&mut tls, "AUTH PLAIN !!!notbase64").await[0].starts_with("501"));
    assert!(send(&mut tls, "AUTH PLAIN").await[0].starts_with("334"));
    assert!(send(&mut tls, "*").await[0].starts_with("501"), "cancel");
    assert!(
        send(&mut tls, &format!("AUTH PLAIN {}", "A".repeat(20_000))).await[0].starts_with("500"),
        "20 KB response"
    );
    assert!(
        send(&mut tls, "NOOP").await[0].starts_with("250"),
        "still in step"
    );
    for _ in 0..2 {
        assert!(
            send(&mut tls, &format!("AUTH PLAIN {}", b64("\0alice\0wrong"))).await[0]
                .starts_with("535")
        );
    }
    let third = send(&mut tls, &format!("AUTH PLAIN {}", b64("\0alice\0wrong"))).await;
    assert!(third[0].starts_with("535"), "{third:?}");
    let closing = reply(&mut tls).await;
    assert!(closing[0].starts_with("421"), "{closing:?}");
    f.shutdown.cancel();
}
