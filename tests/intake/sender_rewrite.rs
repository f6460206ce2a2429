//! Sender rewriting for a smarthost account: a local program's mail leaves with the
//! account's address in the envelope and, as configured, in `From:` (the original kept
//! in `Reply-To:`); mail relayed for another host leaves exactly as it came.

use crate::common;

use std::time::Duration;

use common::upstream::Upstream;
use common::{Env, wait_for};

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split("\r\n\r\n").next()?.split("\r\n").find(|l| {
        l.len() > name.len()
            && l[..name.len()].eq_ignore_ascii_case(name)
            && l[name.len()..].starts_with(':')
    })
}

#[test]
fn local_senders_take_the_account_address_and_relayed_mail_is_untouched() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let env = Env::with_config(&format!(
        "[upstream]\nsmarthost = \"{}\"\ntls = \"none\"\n\
         [upstream.rewrite]\nsenders = {{ \"*\" = \"me@example.org\", backup = \"backups@example.org\" }}\n\
         from_header = true\nkeep_original = \"reply-to\"\n[link]\nprobe_interval = \"1s\"\n",
        upstream.addr
    ));
    let daemon = env.start_daemon();
    let cron = env.send(
        &["-F", "Cron Daemon", "-f", "root", "friend@example.net"],
        b"Subject: from cron\n\nx\n",
    );
    assert!(cron.status.success());
    let backup = env.send(
        &["-f", "backup", "friend@example.net"],
        b"From: Nightly Backup <backup@edge.test>\nSubject: from backup\n\nx\n",
    );
    assert!(backup.status.success());

    // A host on the LAN relays through us: its mail is not ours to rewrite.
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let addr: std::net::SocketAddr = status["listeners"][0].as_str().unwrap().parse().unwrap();
    common::smtp_session(
        &addr.to_string(),
        &[
            ("EHLO lan-box", "250"),
            ("MAIL FROM:<daemon@edge.test>", "250"),
            ("RCPT TO:<friend@example.net>", "250"),
            ("DATA", "354"),
            (
                "From: daemon@edge.test\r\nSubject: relayed\r\n\r\nx\r\n.",
                "250",
            ),
            ("QUIT", "221"),
        ],
    );

    assert!(
        wait_for(Duration::from_secs(30), || upstream.received().len() == 3),
        "{:?}\n{}",
        upstream.received(),
        daemon.log()
    );
    let got = upstream.received();
    let find = |subject: &str| {
        let m = got
            .iter()
            .find(|m| String::from_utf8_lossy(&m.data).contains(subject))
            .unwrap();
        (
            m.from.clone(),
            String::from_utf8_lossy(&m.data).into_owned(),
        )
    };
    let (from, text) = find("from cron");
    assert_eq!(from, "me@example.org");
    assert_eq!(
        header(&text, "From"),
        Some("From: \"Cron Daemon\" <me@example.org>"),
        "{text}"
    );
    assert_eq!(
        header(&text, "Reply-To"),
        Some("Reply-To: \"Cron Daemon\" <root@edge.test>"),
        "{text}"
    );
    let (from, text) = find("from backup");
    assert_eq!(from, "backups@example.org", "the most exact key wins");
    assert_eq!(
        header(&text, "From"),
        Some("From: Nightly Backup <backups@example.org>"),
        "{text}"
    );
    let (from, text) = find("relayed");
    assert_eq!(from, "daemon@edge.test");
    assert_eq!(
        header(&text, "From"),
        Some("From: daemon@edge.test"),
        "{text}"
    );
    assert_eq!(header(&text, "Reply-To"), None);
    daemon.stop();
}

#[test]
fn a_rewrite_without_a_sender_or_with_a_bad_address_is_refused() {
    let env = Env::with_config(
        "[upstream]\nsmarthost = \"s.example:25\"\n[upstream.rewrite]\nsenders = { \"*\" = \"not an address\" }\n",
    );
    let out = env.run(&["config", "check"], b"");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstream.rewrite.senders: \"*\" = \"not an address\": not a mail address"),
        "{err}"
    );
}
