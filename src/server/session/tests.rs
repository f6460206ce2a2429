//! The session state machine without sockets: sequencing, scope resets, relay policy,
//! limits, SMTPUTF8 and submission rules. Assertions are on reply codes and steps.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::ListenKind;
use crate::server::{RelayPolicy, Session, SessionConfig, Step};
use crate::smtp::command::parse;

fn config(kind: ListenKind) -> Arc<SessionConfig> {
    let file = "spool = \"/s\"\n[accept]\nlocal_domains = [\"ours.example\"]\nrelay_networks = [\"127.0.0.0/8\"]\n";
    let c = crate::config::parse(file, std::path::Path::new("/etc/f.toml")).unwrap();
    Arc::new(SessionConfig {
        hostname: "edge.test".into(),
        kind,
        max_message_size: 10_000,
        max_recipients: 3,
        policy: RelayPolicy::from_config(&c),
        tls_available: true,
        auth_available: true,
        max_errors: 10,
        etrn_available: true,
        etrn_networks: vec!["10.0.0.0/8".parse().unwrap()],
        odmr_require_tls: true,
        identity: Arc::default(),
        ferry: false,
    })
}

fn session(client: &str) -> Session {
    Session::new(
        config(ListenKind::Smtp),
        client.parse::<IpAddr>().unwrap(),
        false,
    )
}

/// Runs a command line and returns the reply code (0 for a non-reply step).
fn code(s: &mut Session, line: &str) -> u16 {
    let step = match parse(line.as_bytes()) {
        Ok(cmd) => s.handle(cmd),
        Err(e) => s.error(e.reply()),
    };
    match step {
        Step::Reply(r) | Step::Close(r) => r.code,
        Step::Bdat {
            reject: Some(r), ..
        } => r.code,
        _ => 0,
    }
}

#[test]
fn a_normal_transaction_and_rset() {
    let mut s = session("192.0.2.7");
    assert_eq!(
        code(&mut s, "MAIL FROM:<a@x.example>"),
        503,
        "MAIL before EHLO"
    );
    assert_eq!(code(&mut s, "EHLO client.example"), 250);
    assert_eq!(
        code(&mut s, "RCPT TO:<b@ours.example>"),
        503,
        "RCPT before MAIL"
    );
    assert_eq!(code(&mut s, "DATA"), 503, "DATA before MAIL");
    assert_eq!(code(&mut s, "MAIL FROM:<a@x.example>"), 250);
    assert_eq!(code(&mut s, "MAIL FROM:<a@x.example>"), 503, "nested MAIL");
    assert_eq!(code(&mut s, "DATA"), 554, "no valid recipients");
    assert_eq!(code(&mut s, "RCPT TO:<b@ours.example>"), 250);
    assert_eq!(s.handle(parse(b"DATA").unwrap()), Step::Data);
    assert!(s.message_done().is_some());
    assert_eq!(
        code(&mut s, "RCPT TO:<b@ours.example>"),
        503,
        "transaction over"
    );
    assert_eq!(code(&mut s, "MAIL FROM:<> NOTIFY=NEVER"), 555);
    assert_eq!(code(&mut s, "MAIL FROM:<>"), 250);
    assert_eq!(code(&mut s, "RSET"), 250);
    assert!(s.transaction().is_none());
    assert_eq!(s.helo(), Some("client.example"), "RSET keeps the session");
    assert_eq!(code(&mut s, "VRFY root"), 252);
    assert_eq!(code(&mut s, "QUIT"), 221);
}

#[test]
fn relay_policy_decides_on_the_final_domain() {
    let mut outside = session("192.0.2.7");
    code(&mut outside, "EHLO c.example");
    code(&mut outside, "MAIL FROM:<a@x.example>");
    for rcpt in [
        "<victim@elsewhere.example>",
        "<user%elsewhere.example@[192.0.2.1]>",
        "<@ours.example:user@elsewhere.example>",
        "<\"user@ours.example\"@elsewhere.example>",
    ] {
        assert_eq!(
            code(&mut outside, &format!("RCPT TO:{rcpt}")),
            554,
            "{rcpt}"
        );
    }
    // Routing characters are a relay attempt even at our own domain.
    for rcpt in [
        "<user%elsewhere.example@ours.example>",
        "<\"user@elsewhere.example\"@ours.example>",
        "<elsewhere.example!user@ours.example>",
    ] {
        assert_eq!(
            code(&mut outside, &format!("RCPT TO:{rcpt}")),
            554,
            "{rcpt}"
        );
    }
    assert_eq!(code(&mut outside, "RCPT TO:<user@ours.example>"), 250);
    let mut inside = session("127.0.0.1");
    code(&mut inside, "EHLO c.example");
    code(&mut inside, "MAIL FROM:<a@x.example>");
    assert_eq!(code(&mut inside, "RCPT TO:<victim@elsewhere.example>"), 250);
    let mut authed = session("192.0.2.7");
    authed.authenticated_as("alice".into());
    code(&mut authed, "EHLO c.example");
    code(&mut authed, "MAIL FROM:<a@x.example>");
    assert_eq!(code(&mut authed, "RCPT TO:<victim@elsewhere.example>"), 250);
}

#[test]
fn limits_and_smtputf8() {
    let mut s = session("127.0.0.1");
    code(&mut s, "EHLO c.example");
    assert_eq!(code(&mut s, "MAIL FROM:<a@x.example> SIZE=10001"), 552);
    assert_eq!(code(&mut s, "MAIL FROM:<pelé@x.example>"), 553);
    assert_eq!(code(&mut s, "MAIL FROM:<a@x.example>"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<josé@y.example>"), 553);
    for n in 0..3 {
        assert_eq!(code(&mut s, &format!("RCPT TO:<r{n}@y.example>")), 250);
    }
    assert_eq!(
        code(&mut s, "RCPT TO:<r4@y.example>"),
        452,
        "over max_recipients"
    );
    code(&mut s, "RSET");
    assert_eq!(code(&mut s, "MAIL FROM:<pelé@x.example> SMTPUTF8"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<josé@y.example>"), 250);

    let mut helo = session("127.0.0.1");
    code(&mut helo, "HELO old.example");
    assert_eq!(
        code(&mut helo, "MAIL FROM:<a@x.example> SIZE=10"),
        555,
        "ESMTP parameters need EHLO"
    );
    assert_eq!(code(&mut helo, "MAIL FROM:<a@x.example>"), 250);
}

#[test]
fn starttls_resets_everything_and_auth_needs_tls() {
    let mut s = session("192.0.2.7");
    code(&mut s, "EHLO c.example");
    assert_eq!(code(&mut s, "AUTH PLAIN AGEAYg=="), 530, "AUTH before TLS");
    code(&mut s, "MAIL FROM:<a@x.example>");
    assert_eq!(s.handle(parse(b"STARTTLS").unwrap()), Step::StartTls);
    s.tls_started();
    assert!(s.transaction().is_none() && s.helo().is_none());
    assert_eq!(
        code(&mut s, "MAIL FROM:<a@x.example>"),
        503,
        "EHLO needed again after TLS"
    );
    assert_eq!(code(&mut s, "STARTTLS"), 503, "TLS already active");
    let ehlo = s.handle(parse(b"EHLO c.example").unwrap());
    let Step::Reply(r) = ehlo else { panic!() };
    assert!(
        r.text.contains("AUTH PLAIN LOGIN") && !r.text.contains("STARTTLS"),
        "{}",
        r.text
    );
    assert!(matches!(
        s.handle(parse(b"AUTH PLAIN AGEAYg==").unwrap()),
        Step::Auth { .. }
    ));
    assert_eq!(code(&mut s, "AUTH CRAM-MD5"), 504);
}

#[test]
fn submission_needs_auth_and_the_ehlo_reply_advertises_only_what_applies() {
    let mut s = Session::new(
        config(ListenKind::Submission),
        "192.0.2.7".parse().unwrap(),
        false,
    );
    let Step::Reply(r) = s.handle(parse(b"EHLO c.example").unwrap()) else {
        panic!()
    };
    let keywords: Vec<&str> = r.text.lines().skip(1).collect();
    assert_eq!(
        keywords,
        [
            "PIPELINING",
            "SIZE 10000",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
            "ETRN",
            "STARTTLS"
        ]
    );
    assert!(
        r.to_bytes()
            .starts_with(b"250-edge.test\r\n250-PIPELINING\r\n"),
        "no status codes in EHLO lines"
    );
    assert_eq!(code(&mut s, "MAIL FROM:<a@x.example>"), 530);
}

#[test]
fn errors_close_the_session_at_the_limit() {
    let mut s = session("192.0.2.7");
    for _ in 0..9 {
        assert_eq!(code(&mut s, "XYZZY"), 500);
    }
    assert_eq!(code(&mut s, "XYZZY"), 421);
}

#[test]
fn bdat_without_a_transaction_is_read_and_refused() {
    let mut s = session("127.0.0.1");
    code(&mut s, "EHLO c.example");
    match s.handle(parse(b"BDAT 100 LAST").unwrap()) {
        Step::Bdat {
            size: 100,
            last: true,
            reject: Some(r),
        } => assert_eq!(r.code, 503),
        other => panic!("{other:?}"),
    }
    code(&mut s, "MAIL FROM:<a@x.example>");
    code(&mut s, "RCPT TO:<b@y.example>");
    assert_eq!(
        s.handle(parse(b"BDAT 10").unwrap()),
        Step::Bdat {
            size: 10,
            last: false,
            reject: None
        }
    );
    assert_eq!(code(&mut s, "DATA"), 503, "DATA after BDAT");
}

#[test]
fn etrn_is_for_allowed_networks_and_authenticated_clients_and_names_a_domain() {
    let etrn = |s: &mut Session, line: &str| s.handle(parse(line.as_bytes()).unwrap());
    let mut allowed = session("10.1.2.3");
    assert_eq!(code(&mut allowed, "ETRN field.example"), 503, "EHLO first");
    code(&mut allowed, "EHLO hub.example");
    assert_eq!(
        etrn(&mut allowed, "ETRN Field.Example"),
        Step::Etrn {
            node: "field.example".into(),
            subdomains: false
        }
    );
    assert_eq!(
        etrn(&mut allowed, "ETRN @field.example"),
        Step::Etrn {
            node: "field.example".into(),
            subdomains: true
        }
    );
    for bad in ["ETRN #queue", "ETRN #../x", "ETRN ;reboot", "ETRN a b"] {
        assert_eq!(code(&mut allowed, bad), 501, "{bad}");
    }
    let long = format!("ETRN {}", "x".repeat(300));
    assert_eq!(code(&mut allowed, &long), 501);
    code(&mut allowed, "MAIL FROM:<a@x.example>");
    assert_eq!(
        code(&mut allowed, "ETRN field.example"),
        503,
        "not inside a transaction"
    );

    let mut stranger = session("192.0.2.9");
    code(&mut stranger, "EHLO far.example");
    assert_eq!(code(&mut stranger, "ETRN field.example"), 459);
    stranger.authenticated_as("edge".into());
    assert!(matches!(
        etrn(&mut stranger, "ETRN field.example"),
        Step::Etrn { .. }
    ));
}
