//! The delivery client against a scripted, hostile upstream (what a hostile server can send back): a
//! small TCP server that answers each command as the test says and records every byte it
//! receives. Content reaches it canonical and dot-stuffed; TLS required but missing means
//! no MAIL and no credentials ever sent; endless continuations, huge lines and junk codes
//! defer; silence after the dot times out and defers; failures at MAIL, DATA and end of
//! data apply to every recipient of the transaction; 421 defers everything; a reply
//! injected after STARTTLS's 220 is dropped and EHLO said again inside TLS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrymail::config::TlsPolicy;
use ferrymail::delivery::batch::Tracker;
use ferrymail::delivery::client::{ClientSettings, ClientTimeouts, Connection, Outgoing};
use ferrymail::delivery::content::Content;
use ferrymail::delivery::outcome::{Classified, Outcome, Scope};
use ferrymail::spool::Recipient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the fake upstream does in reply to a command line (or `.` for end of data).
#[derive(Clone)]
enum Answer {
    Reply(String),
    /// Send these bytes as they are.
    Raw(Vec<u8>),
    /// Say nothing, forever.
    Silence,
}

fn reply(s: &str) -> Answer {
    Answer::Reply(s.to_owned())
}

type Script = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// Starts the fake; returns its address and everything it received.
async fn fake(ehlo: &'static str, script: Script) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write
            .write_all(b"220 fake.example ESMTP\r\n")
            .await
            .unwrap();
        loop {
            let mut line = Vec::new();
            if read.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                return;
            }
            log.lock().unwrap().extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            let upper = text.to_ascii_uppercase();
            let answer = if upper.starts_with("EHLO") {
                Answer::Raw(ehlo.as_bytes().to_vec())
            } else if upper == "DATA" {
                match script("DATA") {
                    Answer::Reply(r) if r.starts_with("354") => {
                        write
                            .write_all(format!("{r}\r\n").as_bytes())
                            .await
                            .unwrap();
                        // Read the content up to the end of data, then answer for ".".
                        let mut content = Vec::new();
                        while !content.ends_with(b"\r\n.\r\n") {
                            let mut chunk = Vec::new();
                            if read.read_until(b'\n', &mut chunk).await.unwrap_or(0) == 0 {
                                return;
                            }
                            content.extend_from_slice(&chunk);
                        }
                        log.lock().unwrap().extend_from_slice(&content);
                        script(".")
                    }
                    other => other,
                }
            } else if let Some(size) = upper.strip_prefix("BDAT ") {
                let n: usize = size.split(' ').next().unwrap().parse().unwrap();
                let mut chunk = vec![0u8; n];
                read.read_exact(&mut chunk).await.unwrap();
                log.lock().unwrap().extend_from_slice(&chunk);
                script("BDAT")
            } else {
                script(&text)
            };
            match answer {
                Answer::Reply(r) => write
                    .write_all(format!("{r}\r\n").as_bytes())
                    .await
                    .unwrap(),
                Answer::Raw(bytes) => {
                    if write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Answer::Silence => tokio::time::sleep(Duration::from_secs(3600)).await,
            }
        }
    });
    (addr, seen)
}

const PLAIN_EHLO: &str = "250-fake.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
const CHUNKING_EHLO: &str =
    "250-fake.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n";

/// An upstream that accepts everything.
fn accepting(cmd: &str) -> Answer {
    match cmd {
        "DATA" => reply("354 go on"),
        "QUIT" => reply("221 bye"),
        _ => reply("250 2.0.0 ok"),
    }
}

fn settings(tls: TlsPolicy, credentials: bool) -> ClientSettings {
    let tls_config =
        ferrymail::delivery::settings::tls_client_config(rustls::RootCertStore::empty()).unwrap();
    ClientSettings {
        helo: "edge.test".into(),
        tls,
        tls_config,
        credentials: credentials.then(|| ("edge".into(), "secret".into())),
        use_chunking: true,
        ferry: false,
        timeouts: ClientTimeouts {
            command: Duration::from_secs(2),
            end_of_data: Duration::from_secs(2),
            ..ClientTimeouts::default()
        },
    }
}

fn message<'a>(rcpts: &'a [Recipient], content: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        id: "0TEST",
        sender: crate::common::listener::edge_sender(),
        recipients: rcpts,
        content: Content::Bytes(content),
        body: None,
        eight_bit: false,
        smtputf8: false,
        envid: None,
        ret: None,
    }
}

fn rcpts(n: usize) -> Vec<Recipient> {
    (0..n)
        .map(|i| Recipient::parse(&format!("r{i}@x.example")).unwrap())
        .collect()
}

#[tokio::test]
async fn content_reaches_the_wire_canonical_and_dot_stuffed() {
    let (addr, seen) = fake(PLAIN_EHLO, Arc::new(accepting)).await;
    let mut c = Connection::open(addr, "fake.example", &settings(TlsPolicy::None, false))
        .await
        .unwrap();
    // Stored content should already be canonical; the client makes sure anyway.
    let content = b"Subject: x\n\nbare LF\nstray\rCR\n.\nsmuggled? no\r\n..x\r\n";
    let r = rcpts(1);
    let outcomes = c.send(&message(&r, content)).await.unwrap();
    assert_eq!(outcomes[0].outcome, Outcome::Delivered);
    let wire = seen.lock().unwrap().clone();
    let start = wire
        .windows(7)
        .position(|w| w == b"DATA\r\n" || w.starts_with(b"DATA\r\n"))
        .unwrap()
        + 6;
    let data = &wire[start..];
    assert_eq!(
        data,
        b"Subject: x\r\n\r\nbare LF\r\nstray\r\nCR\r\n..\r\nsmuggled? no\r\n...x\r\n.\r\n"
    );
    let no_bare = data
        .windows(2)
        .all(|w| (w[1] != b'\n' || w[0] == b'\r') && (w[0] != b'\r' || w[1] == b'\n'));
    assert!(no_bare, "a bare CR or LF reached the wire");
}

#[tokio::test]
async fn required_tls_missing_means_nothing_is_sent() {
    for ehlo in [
        PLAIN_EHLO,
        "250-fake.example\r\n250-STARTTLS\r\n250 PIPELINING\r\n",
    ] {
        let script: Script = Arc::new(|cmd: &str| {
            if cmd == "STARTTLS" {
                reply("454 4.7.0 TLS not available")
            } else {
                accepting(cmd)
            }
        });
        let (addr, seen) = fake(ehlo, script).await;
        let err = Connection::open(addr, "fake.example", &settings(TlsPolicy::Required, true))
            .await
            .err()
            .unwrap();
        assert_eq!(
            (err.outcome, err.scope),
            (Outcome::Deferred, Scope::Connection),
            "{err:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let wire = String::from_utf8_lossy(&seen.lock().unwrap()).to_ascii_uppercase();
        assert!(
            !wire.contains("MAIL FROM") && !wire.contains("AUTH"),
            "sent in clear: {wire}"
        );
    }
}

#[tokio::test]
async fn hostile_replies_defer_and_stay_bounded() {
    let endless = format!("250-fake.example\r\n{}", "250-X\r\n".repeat(200));
    let huge = format!("250 {}\r\n", "x".repeat(1 << 20));
    for ehlo in [
        endless.as_str(),
        huge.as_str(),
        "2x0 what\r\n",
        "250-fake\r\n550 mixed codes\r\n",
    ] {
        let ehlo: &'static str = Box::leak(ehlo.to_owned().into_boxed_str());
        let (addr, _) = fake(ehlo, Arc::new(accepting)).await;
        let err = Connection::open(addr, "fake.example", &settings(TlsPolicy::None, false))
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.outcome,
            Outcome::Deferred,
            "{}",
            &ehlo[..20.min(ehlo.len())]
        );
    }
}

#[tokio::test]
async fn silence_after_the_dot_times_out_and_defers() {
    let script: Script = Arc::new(|cmd: &str| {
        if cmd == "." {
            Answer::Silence
        } else {
            accepting(cmd)
        }
    });
    let (addr, _) = fake(PLAIN_EHLO, script).await;
    let mut c = Connection::open(addr, "fake.example", &settings(TlsPolicy::None, false))
        .await
        .unwrap();
    let r = rcpts(2);
    let err = c
        .send(&message(&r, b"Subject: x\r\n\r\ny\r\n"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        (err.outcome, err.scope),
        (Outcome::Deferred, Scope::Connection)
    );
    assert!(err.reason.contains("end of data"), "{}", err.reason);
}

#[tokio::test]
async fn failures_at_mail_data_and_end_of_data_cover_the_transaction() {
    for (at, answer, want) in [
        ("MAIL", "451 4.3.0 later", Outcome::Deferred),
        ("MAIL", "553 5.1.8 sender refused", Outcome::Bounced),
        ("DATA", "451 4.3.0 later", Outcome::Deferred),
        ("DATA", "554 5.6.0 no", Outcome::Bounced),
        (".", "452 4.3.1 full", Outcome::Deferred),
        (".", "552 5.3.4 too big", Outcome::Bounced),
        ("RCPT", "421 4.3.2 going away", Outcome::Deferred),
    ] {
        let script: Script = Arc::new(move |cmd: &str| {
            if cmd.to_ascii_uppercase().starts_with(at) || cmd == at {
                reply(answer)
            } else {
                accepting(cmd)
            }
        });
        let (addr, _) = fake(PLAIN_EHLO, script).await;
        let mut c = Connection::open(addr, "fake.example", &settings(TlsPolicy::None, false))
            .await
            .unwrap();
        let r = rcpts(3);
        let outcomes = match c.send(&message(&r, b"Subject: x\r\n\r\ny\r\n")).await {
            Ok(o) => o,
            Err(e) => vec![e; 3],
        };
        assert_eq!(outcomes.len(), 3);
        for o in &outcomes {
            assert_eq!(o.outcome, want, "{at} {answer}: {o:?}");
        }
    }
}

#[tokio::test]
async fn mixed_recipient_outcomes_over_bdat() {
    let script: Script = Arc::new(|cmd: &str| match cmd {
        c if c.contains("r1@") => reply("451 4.7.1 greylisted"),
        c if c.contains("r2@") => reply("550 5.1.1 no such user"),
        other => accepting(other),
    });
    let (addr, seen) = fake(CHUNKING_EHLO, script).await;
    let mut c = Connection::open(addr, "fake.example", &settings(TlsPolicy::None, false))
        .await
        .unwrap();
    assert!(c.uses_chunking());
    let r = rcpts(3);
    let outcomes = c
        .send(&message(&r, b"Subject: x\r\n\r\n.y\r\n"))
        .await
        .unwrap();
    let got: Vec<Outcome> = outcomes.iter().map(|o| o.outcome).collect();
    assert_eq!(
        got,
        [Outcome::Delivered, Outcome::Deferred, Outcome::Bounced]
    );
    let wire = seen.lock().unwrap().clone();
    let contains = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"BDAT 18 LAST\r\nSubject: x\r\n\r\n.y\r\n"),
        "BDAT content is sent exactly"
    );
    assert!(!contains(b"..y"), "no dot-stuffing under BDAT");
}

#[tokio::test]
async fn without_chunking_a_batch_goes_message_by_message() {
    let script: Script = Arc::new(|cmd: &str| {
        if cmd.contains("r1@") {
            reply("550 5.1.1 no such user")
        } else {
            accepting(cmd)
        }
    });
    let (addr, seen) = fake(PLAIN_EHLO, script).await;
    let mut c = Connection::open(addr, "fake.example", &settings(TlsPolicy::None, false))
        .await
        .unwrap();
    assert!(!c.uses_chunking());
    let r = rcpts(2);
    let contents = [
        &b"Subject: 1\r\n\r\n.one\r\n"[..],
        b"Subject: 2\r\n\r\ntwo\r\n",
        b"Subject: 3\r\n\r\nthree\r\n",
    ];
    let batch: Vec<Outgoing<'_>> = contents.iter().map(|c| message(&r, c)).collect();
    let mut reported = Vec::new();
    let (durable_tx, durable) = tokio::sync::watch::channel(0usize);
    let mut answered = |i: usize, o: &[Classified]| {
        reported.push((i, o.len()));
        durable_tx.send_modify(|n| *n += 1);
    };
    let track = Tracker {
        answered: &mut answered,
        durable,
    };
    let outcomes = c.send_batch(&batch, track).await;
    assert_eq!(
        reported,
        [(0, 2), (1, 2), (2, 2)],
        "each message reported as it is answered"
    );
    for o in &outcomes {
        let got: Vec<Outcome> = o.iter().map(|c| c.outcome).collect();
        assert_eq!(got, [Outcome::Delivered, Outcome::Bounced]);
    }
    let wire = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert_eq!(wire.matches("DATA\r\n").count(), 3);
    assert!(
        wire.contains("\r\n..one\r\n"),
        "dot-stuffed on the DATA path"
    );
}

/// A STARTTLS upstream that injects a reply after its `220` (response injection): the
/// client must drop it, do TLS, and say EHLO again, reading only what came inside TLS.
#[tokio::test]
async fn replies_injected_after_starttls_are_dropped() {
    let ck = rcgen::generate_simple_self_signed(vec!["fake.example".into()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inside = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = inside.clone();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        tcp.write_all(b"220 fake.example ESMTP\r\n").await.unwrap();
        let _ = tcp.read(&mut buf).await.unwrap(); // EHLO
        tcp.write_all(b"250-fake.example\r\n250 STARTTLS\r\n")
            .await
            .unwrap();
        let _ = tcp.read(&mut buf).await.unwrap(); // STARTTLS
        // The injection: a fake EHLO reply (no PIPELINING) sent with the 220.
        tcp.write_all(b"220 go ahead\r\n250-injected\r\n250 8BITMIME\r\n")
            .await
            .unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let (read, mut write) = tokio::io::split(tls);
        let mut read = BufReader::new(read);
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let cmd = line.trim_end().to_owned();
            log.lock().unwrap().push(cmd.clone());
            let answer = if cmd.starts_with("EHLO") {
                "250-inside.tls\r\n250-PIPELINING\r\n250 8BITMIME\r\n".to_owned()
            } else if cmd == "DATA" {
                "354 go on\r\n".to_owned()
            } else if cmd == "." {
                "250 2.0.0 queued inside TLS\r\n".to_owned()
            } else if cmd == "QUIT" {
                "221 bye\r\n".to_owned()
            } else if cmd.starts_with("MAIL") || cmd.starts_with("RCPT") {
                "250 2.0.0 ok\r\n".to_owned()
            } else {
                continue;
            };
            write.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let s = ClientSettings {
        tls_config: ferrymail::delivery::settings::tls_client_config(roots).unwrap(),
        ..settings(TlsPolicy::Required, false)
    };
    let mut c = Connection::open(addr, "fake.example", &s).await.unwrap();
    assert!(
        c.capabilities().pipelining,
        "the capabilities are those said inside TLS, not the injected ones"
    );
    let r = rcpts(1);
    let outcomes = c
        .send(&message(&r, b"Subject: x\r\n\r\nx\r\n"))
        .await
        .unwrap();
    assert_eq!(outcomes[0].outcome, Outcome::Delivered, "{:?}", outcomes[0]);
    assert!(
        outcomes[0].reason.contains("inside TLS"),
        "{}",
        outcomes[0].reason
    );
    c.quit().await;
    let commands = inside.lock().unwrap().clone();
    assert!(
        commands[0].starts_with("EHLO"),
        "EHLO again inside TLS: {commands:?}"
    );
}
