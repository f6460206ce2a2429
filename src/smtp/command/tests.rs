//! The command parser against a table: what parses to what, and what every hostile form
//! of input to the listener maps to (the reply class, not its wording).

use crate::smtp::command::{Command, parse};
use crate::smtp::{BodyType, Ret};

fn code(line: &str) -> u16 {
    match parse(line.as_bytes()) {
        Ok(_) => 0,
        Err(e) => e.reply().code,
    }
}

#[test]
fn well_formed_commands() {
    let Command::Mail(m) = parse(
        b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1 AUTH=<>",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(m.path.to_string(), "a@b.example");
    assert_eq!(m.size, Some(1000));
    assert_eq!(m.body, Some(BodyType::EightBitMime));
    assert!(m.smtputf8);
    assert_eq!(m.ret, Some(Ret::Hdrs));
    assert_eq!(m.envid.as_deref(), Some("QQ+1"));
    assert_eq!(m.auth, Some(None));

    let Command::Mail(m) = parse(b"mail from: <>").unwrap() else {
        panic!()
    };
    assert_eq!(m.path.to_string(), "");

    let Command::Rcpt(r) = parse(
        b"RCPT TO:<\"john doe\"@x.example> NOTIFY=success,delay ORCPT=rfc822;john+40x.example",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(r.mailbox.local_part(), "\"john doe\"");
    assert_eq!(
        r.notify.map(|n| n.to_string()).as_deref(),
        Some("SUCCESS,DELAY")
    );
    assert_eq!(r.orcpt.as_deref(), Some("rfc822;john@x.example"));

    // RFC 5321 §4.1.1.3: source routes accepted and ignored.
    let Command::Rcpt(r) =
        parse(b"RCPT TO:<@relay.example,@b.example:user@victim.example>").unwrap()
    else {
        panic!()
    };
    assert_eq!(r.mailbox.to_string(), "user@victim.example");

    assert_eq!(
        parse(b"EHLO client.example").unwrap(),
        Command::Ehlo("client.example".into())
    );
    assert_eq!(
        parse(b"ehlo [192.0.2.1]").unwrap(),
        Command::Ehlo("[192.0.2.1]".into())
    );
    assert_eq!(
        parse(b"BDAT 1000 LAST").unwrap(),
        Command::Bdat {
            size: 1000,
            last: true
        }
    );
    assert_eq!(
        parse(b"BDAT 0").unwrap(),
        Command::Bdat {
            size: 0,
            last: false
        }
    );
    assert_eq!(parse(b"DATA").unwrap(), Command::Data);
    assert_eq!(parse(b"NOOP anything").unwrap(), Command::Noop);
    assert_eq!(parse(b"STARTTLS").unwrap(), Command::StartTls);
    assert_eq!(
        parse(b"AUTH plain AGEAYg==").unwrap(),
        Command::Auth {
            mechanism: "PLAIN".into(),
            initial: Some("AGEAYg==".into())
        }
    );
    assert_eq!(
        parse(b"ETRN @field.example").unwrap(),
        Command::Etrn("@field.example".into())
    );
}

#[test]
fn hostile_and_malformed_commands() {
    let long_local = format!("MAIL FROM:<{}@x.example>", "a".repeat(65));
    let long_domain = format!("RCPT TO:<a@{}.example>", "b".repeat(250));
    let cases: Vec<(&str, u16)> = vec![
        ("MAIL FROM:<;sleep 1;>", 501),
        ("MAIL FROM:<a@b.example> AUTH=x+0AX-Injected:1", 501),
        ("MAIL FROM:<a@b.example> SIZE=", 501),
        ("MAIL FROM:<a@b.example> SIZE=99999999999999999999999", 501),
        ("MAIL FROM:<a@b.example> SIZE=18446744073709551616", 501),
        ("MAIL FROM:<a@b.example> =\"", 555),
        ("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", 501),
        ("MAIL FROM:<a@b.example> BODY=9BIT", 501),
        ("MAIL FROM:<a@b.example> XFORWARD=1", 555),
        ("MAIL FROM:<a@b.example> ENVID=", 0),
        (long_local.as_str(), 501),
        (long_domain.as_str(), 501),
        ("MAIL FROM:a@b.example", 501),
        ("MAIL FROM:<a@b.example", 501),
        ("MAIL FROM:<a@b.example>SIZE=1", 501),
        ("MAIL TO:<a@b.example>", 501),
        ("RCPT TO:<>", 501),
        ("RCPT TO:<a@b.example> NOTIFY=NEVER,SUCCESS", 501),
        ("RCPT TO:<a@b.example> ORCPT=noseparator", 501),
        ("RCPT TO:<a@b.example> ORCPT=rfc822;x+0D+0Ay", 501),
        ("GET / HTTP/1.1", 500),
        ("XYZZY", 500),
        ("DATA now", 501),
        ("QUIT please", 501),
        ("BDAT", 501),
        ("BDAT -1", 554), // its chunk cannot be skipped: the connection closes
        ("BDAT 10 FIRST", 501),
        ("EHLO", 501),
        ("EHLO two words", 501),
        ("AUTH", 501),
        ("ETRN", 501),
    ];
    for (line, want) in cases {
        assert_eq!(code(line), want, "{line:?}");
    }
    // Control characters and invalid UTF-8 never parse.
    assert_eq!(parse(b"NOOP \x00").unwrap_err().reply().code, 501);
    assert_eq!(parse(b"MAIL FROM:<\xff@x>").unwrap_err().reply().code, 501);
}

#[test]
fn the_open_relay_forms_parse_to_their_final_domain() {
    // nmap smtp-open-relay's address forms: only the final domain may decide routing.
    for (rcpt, domain) in [
        ("<user%victim.example@[192.0.2.1]>", "[192.0.2.1]"),
        ("<user%victim.example@ours.example>", "ours.example"),
        ("<\"user@victim.example\"@ours.example>", "ours.example"),
        ("<\"user%victim.example\"@ours.example>", "ours.example"),
        ("<@ours.example:user@victim.example>", "victim.example"),
        ("<victim.example!user@ours.example>", "ours.example"),
        ("<user@victim.example>", "victim.example"),
    ] {
        let line = format!("RCPT TO:{rcpt}");
        let Command::Rcpt(r) = parse(line.as_bytes()).unwrap() else {
            panic!("{rcpt}")
        };
        assert_eq!(r.mailbox.domain(), domain, "{rcpt}");
    }
    // Forms without a final domain do not parse at all.
    for rcpt in [
        "<victim.example!user>",
        "<user%victim.example>",
        "<\"user@victim.example\">",
    ] {
        assert_eq!(code(&format!("RCPT TO:{rcpt}")), 501, "{rcpt}");
    }
}
