//! The delivery client against a real upstream: our own listener, in process, which
//! offers PIPELINING, CHUNKING, STARTTLS and AUTH. What the upstream stores must be the
//! content we sent, byte for byte, behind its own Received header, via BDAT and via DATA;
//! outcomes come per recipient; TLS and AUTH policies hold; many messages share one
//! connection; an unreachable upstream is our link, not an attempt.

use std::time::Duration;

use crate::common;

use common::listener::{Listener, Options};
use ferrymail::config::TlsPolicy;
use ferrymail::delivery::client::{ClientSettings, ClientTimeouts, Connection, Outgoing};
use ferrymail::delivery::content::Content;
use ferrymail::delivery::outcome::{Outcome, Scope};
use ferrymail::spool::Recipient;
use rustls_pki_types::CertificateDer;

/// Our listener as an upstream: `ours.example` is local, nothing else relays (unless
/// authenticated); optionally STARTTLS and a user `edge` / `secret`.
async fn upstream(tls: bool, max_recipients: u32) -> Listener {
    let extra = format!("max_recipients = {max_recipients}\n");
    Listener::start_with(Options {
        extra: &extra,
        tls_users: tls.then_some(&[("edge", "secret")][..]),
        ..Options::default()
    })
    .await
}

fn settings(
    tls: TlsPolicy,
    trust: Option<&CertificateDer<'static>>,
    credentials: bool,
    use_chunking: bool,
) -> ClientSettings {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(cert) = trust {
        roots.add(cert.clone()).unwrap();
    }
    let tls_config = ferrymail::delivery::settings::tls_client_config(roots).unwrap();
    ClientSettings {
        helo: "edge.test".into(),
        tls,
        tls_config,
        credentials: credentials.then(|| ("edge".into(), "secret".into())),
        use_chunking,
        ferry: false,
        timeouts: ClientTimeouts {
            connect: Duration::from_secs(5),
            ..ClientTimeouts::default()
        },
    }
}

fn outgoing<'a>(recipients: &'a [Recipient], content: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        id: "0TEST",
        sender: common::listener::edge_sender(),
        recipients,
        content: Content::Bytes(content),
        body: None,
        eight_bit: content.iter().any(|b| *b >= 0x80),
        smtputf8: false,
        envid: None,
        ret: None,
    }
}

fn tricky_content() -> Vec<u8> {
    let mut c = b"Received: from edge.test by edge.test; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: tricky\r\n\r\n".to_vec();
    c.extend_from_slice(b".leading dot\r\n..two dots\r\n.\r\nalone above was a dot line\r\n");
    c.extend_from_slice("8-bit: caf\u{e9} na\u{ef}ve\r\n".as_bytes());
    c.extend(std::iter::repeat_n(b'L', 998)); // the longest line RFC 5322 allows
    c.extend_from_slice(b"\r\nbinary: ");
    // Every octet but NUL (refused on intake) and bare CR or LF (never on the wire).
    c.extend((1..=255u8).filter(|b| *b != b'\r' && *b != b'\n'));
    c.extend_from_slice(b"\r\nlast line\r\n");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_arrives_byte_exact_via_bdat_and_via_data() {
    let up = upstream(false, 100).await;
    let content = tricky_content();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    for chunking in [true, false] {
        let s = settings(TlsPolicy::None, None, false, chunking);
        let mut conn = Connection::open(up.addr, "hub.test", &s).await.unwrap();
        assert!(conn.capabilities().chunking && conn.capabilities().pipelining);
        assert_eq!(conn.uses_chunking(), chunking);
        let outcomes = conn.send(&outgoing(&rcpts, &content)).await.unwrap();
        assert_eq!(outcomes[0].outcome, Outcome::Delivered, "{:?}", outcomes[0]);
        conn.quit().await;
        let got = up.stored().pop().unwrap();
        let received_end = got.windows(4).position(|w| w == b"\r\n\tb").unwrap_or(0);
        assert!(
            got.starts_with(b"Received: from edge.test"),
            "chunking {chunking}"
        );
        assert!(
            got.ends_with(&content),
            "chunking {chunking}: content changed in transit"
        );
        assert!(received_end > 0);
    }
    up.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_per_recipient() {
    let up = upstream(false, 2).await;
    let s = settings(TlsPolicy::None, None, false, true);
    let mut conn = Connection::open(up.addr, "hub.test", &s).await.unwrap();
    let rcpts = [
        Recipient::parse("ok@ours.example").unwrap(),
        Recipient::parse("victim@elsewhere.example").unwrap(),
        Recipient::parse("also@ours.example").unwrap(),
        Recipient::parse("third@ours.example").unwrap(),
    ];
    let content = b"Subject: mixed\r\n\r\nhi\r\n";
    let outcomes = conn.send(&outgoing(&rcpts, content)).await.unwrap();
    let got: Vec<Outcome> = outcomes.iter().map(|o| o.outcome).collect();
    // 250, 554 relay denied, 250, then 452 over max_recipients = 2.
    assert_eq!(
        got,
        [
            Outcome::Delivered,
            Outcome::Bounced,
            Outcome::Delivered,
            Outcome::Deferred
        ]
    );
    assert_eq!(outcomes[1].status, "5.7.1");
    assert_eq!(outcomes[1].scope, Scope::Recipient);
    assert!(
        outcomes[0]
            .reason
            .starts_with("end of data: 250 2.0.0 Ok: queued as"),
        "{}",
        outcomes[0].reason
    );
    // All refused: nothing is sent, and the connection stays usable.
    let refused = conn.send(&outgoing(&rcpts[1..2], content)).await.unwrap();
    assert_eq!(refused[0].outcome, Outcome::Bounced);
    let again = conn.send(&outgoing(&rcpts[..1], content)).await.unwrap();
    assert_eq!(again[0].outcome, Outcome::Delivered);
    conn.quit().await;
    assert_eq!(up.stored().len(), 2);
    up.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_share_one_connection() {
    let up = upstream(false, 100).await;
    let s = settings(TlsPolicy::None, None, false, true);
    let mut conn = Connection::open(up.addr, "hub.test", &s).await.unwrap();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    for n in 0..20 {
        let content = format!("Subject: {n}\r\n\r\nmessage {n}\r\n");
        let outcomes = conn
            .send(&outgoing(&rcpts, content.as_bytes()))
            .await
            .unwrap();
        assert_eq!(outcomes[0].outcome, Outcome::Delivered);
    }
    conn.quit().await;
    assert_eq!(up.stored().len(), 20);
    up.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth_policies_hold() {
    let up = upstream(true, 100).await;
    let cert = up.cert.clone().unwrap();
    // Required TLS with the right trust anchor, then AUTH: relaying is allowed.
    let s = settings(TlsPolicy::Required, Some(&cert), true, true);
    let mut conn = Connection::open(up.addr, "hub.test", &s).await.unwrap();
    let rcpts = [Recipient::parse("far@elsewhere.example").unwrap()];
    let outcomes = conn
        .send(&outgoing(&rcpts, b"Subject: tls\r\n\r\nx\r\n"))
        .await
        .unwrap();
    assert_eq!(outcomes[0].outcome, Outcome::Delivered, "{:?}", outcomes[0]);
    conn.quit().await;
    assert!(String::from_utf8_lossy(&up.stored()[0]).contains("with ESMTPSA id"));

    // A certificate we do not trust: deferred, never a fall-back to clear text.
    let untrusting = settings(TlsPolicy::Required, None, true, true);
    let err = Connection::open(up.addr, "hub.test", &untrusting)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (err.outcome, err.scope, err.status.as_str()),
        (Outcome::Deferred, Scope::Connection, "4.7.5")
    );
    // Credentials without TLS are never sent.
    let clear = settings(TlsPolicy::None, None, true, true);
    let err = Connection::open(up.addr, "hub.test", &clear)
        .await
        .err()
        .unwrap();
    assert!(err.reason.contains("without TLS"), "{}", err.reason);
    up.shutdown.cancel();

    // Required TLS against an upstream without STARTTLS: deferred.
    let plain = upstream(false, 100).await;
    let err = Connection::open(
        plain.addr,
        "hub.test",
        &settings(TlsPolicy::Required, None, false, true),
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.reason.contains("STARTTLS not offered"),
        "{}",
        err.reason
    );
    // Opportunistic: goes ahead in clear.
    let s = settings(TlsPolicy::Opportunistic, None, false, true);
    assert!(Connection::open(plain.addr, "hub.test", &s).await.is_ok());
    plain.shutdown.cancel();
}

/// Opportunistic TLS (as for MX hosts, without credentials) encrypts even when the
/// certificate is one nobody vouches for: a self-signed one here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_tls_encrypts_without_verifying() {
    let up = upstream(true, 100).await;
    let s = ClientSettings {
        tls_config: ferrymail::delivery::opportunistic::unauthenticated_client_config().unwrap(),
        ..settings(TlsPolicy::Opportunistic, None, false, true)
    };
    let mut conn = Connection::open(up.addr, "hub.test", &s).await.unwrap();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    let outcomes = conn
        .send(&outgoing(&rcpts, b"Subject: may\r\n\r\nx\r\n"))
        .await
        .unwrap();
    assert_eq!(outcomes[0].outcome, Outcome::Delivered, "{:?}", outcomes[0]);
    conn.quit().await;
    let stored = String::from_utf8_lossy(&up.stored()[0]).into_owned();
    assert!(
        stored.contains("with ESMTPS id"),
        "sent under TLS: {stored}"
    );
    up.shutdown.cancel();
}

#[tokio::test]
async fn an_unreachable_upstream_is_our_link_not_an_attempt() {
    let closed: std::net::SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let err = Connection::open(
        closed,
        "hub.test",
        &settings(TlsPolicy::None, None, false, true),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (err.outcome, err.scope),
        (Outcome::LinkDown, Scope::Connection)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_pipelined_across_messages() {
    let up = upstream(false, 100).await;
    let s = settings(TlsPolicy::None, None, false, true);
    let mut conn = Connection::open(up.addr, "hub.test", &s).await.unwrap();
    let good = [Recipient::parse("b@ours.example").unwrap()];
    let refused = [Recipient::parse("victim@elsewhere.example").unwrap()];
    let mixed = [
        Recipient::parse("c@ours.example").unwrap(),
        Recipient::parse("victim@elsewhere.example").unwrap(),
    ];
    let contents: Vec<Vec<u8>> = (0..30)
        .map(|n| format!("Subject: batch {n}\r\n\r\n.dot {n}\r\n").into_bytes())
        .collect();
    // Every third message is refused outright; every fifth has a refused recipient.
    let batch: Vec<Outgoing<'_>> = contents
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let rcpts: &[Recipient] = if n % 3 == 2 {
                &refused
            } else if n % 5 == 4 {
                &mixed
            } else {
                &good
            };
            outgoing(rcpts, c)
        })
        .collect();
    let outcomes = conn.send_batch_unrecorded(&batch).await;
    assert_eq!(outcomes.len(), 30);
    let mut expect_stored = 0;
    for (n, o) in outcomes.iter().enumerate() {
        if n % 3 == 2 {
            assert_eq!(o[0].outcome, Outcome::Bounced, "message {n}");
        } else {
            expect_stored += 1;
            assert_eq!(o[0].outcome, Outcome::Delivered, "message {n}: {:?}", o[0]);
            if n % 5 == 4 {
                assert_eq!(o[1].outcome, Outcome::Bounced, "message {n}");
            }
        }
    }
    // The connection is still in step after the batch.
    let after = conn
        .send(&outgoing(&good, b"Subject: after\r\n\r\nx\r\n"))
        .await
        .unwrap();
    assert_eq!(after[0].outcome, Outcome::Delivered);
    conn.quit().await;
    let stored = up.stored();
    assert_eq!(stored.len(), expect_stored + 1);
    // Byte-exact and in order: the oldest stored is batch 0.
    assert!(stored.first().unwrap().ends_with(&contents[0]));
    up.shutdown.cancel();
}
