//! `ferrymail send` / `sendmail`: durable in the maildrop whether or not the daemon runs,
//! picked up exactly once, `-t` with Bcc, dots, and every refused input with its exit
//! code and nothing queued.

use crate::common;

use std::time::Duration;

use common::{Env, message, stored_messages, wait_for};

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn send_with_the_daemon_down_waits_in_the_maildrop_and_is_picked_up_at_start() {
    let env = Env::new();
    let out = env.send(&["rcpt@example.net"], &message("offline"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.files_in("maildrop/new").len(), 1);
    let listed = env.queue_json();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["location"], "maildrop");
    assert_eq!(listed[0]["recipients"][0]["address"], "rcpt@example.net");

    let daemon = env.start_daemon();
    assert!(
        wait_for(Duration::from_secs(20), || env.queued().len() == 1),
        "not picked up"
    );
    assert!(env.files_in("maildrop/new").is_empty());
    let entry = &env.queued()[0];
    assert_eq!(
        entry["sender"].as_str().unwrap().split('@').nth(1),
        Some("edge.test")
    );
    assert_eq!(entry["recipients"][0]["state"], "queued");
    assert_eq!(daemon.stop(), Some(0));

    let (_, bytes) = &stored_messages(&env.spool)[0];
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.starts_with("Received: by edge.test (ferrymail, from userid "),
        "{text}"
    );
    assert!(text.contains("\r\nSubject: offline\r\n"));
    assert!(!text.replace("\r\n", "").contains('\n'), "bare LF stored");
}

#[test]
fn fifty_concurrent_sends_make_fifty_messages() {
    let env = Env::new();
    let daemon = env.start_daemon();
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|n| {
                let env = &env;
                s.spawn(move || {
                    env.send(&["rcpt@example.net"], &message(&format!("concurrent {n}")))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outputs {
        assert!(out.status.success(), "{}", text(out));
    }
    assert!(
        wait_for(Duration::from_secs(30), || env.queued().len() == 50),
        "queued: {}",
        env.queued().len()
    );
    daemon.stop();
    let mut subjects: Vec<String> = stored_messages(&env.spool)
        .iter()
        .map(|(_, b)| {
            let t = String::from_utf8_lossy(b);
            t.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
                .unwrap()
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 50, "each message exactly once");
}

#[test]
fn dash_t_takes_to_cc_and_bcc_and_removes_bcc() {
    let env = Env::new();
    let msg = b"From: me@edge.test\nTo: \"Bob\" <bob@example.net>, carol@example.net\nCc: dave@example.net\nBcc: eve@example.net,\n  frank@example.net\nSubject: t\n\nhi\n";
    let out = env.send(&["-t", "extra@example.net"], msg);
    assert!(out.status.success(), "{}", text(&out));
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 1));
    daemon.stop();
    let entry = &env.queued()[0];
    let mut rcpts: Vec<&str> = entry["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "bob@example.net",
            "carol@example.net",
            "dave@example.net",
            "eve@example.net",
            "extra@example.net",
            "frank@example.net"
        ]
    );
    let (_, bytes) = &stored_messages(&env.spool)[0];
    let stored = String::from_utf8_lossy(bytes);
    assert!(
        !stored.to_lowercase().contains("bcc"),
        "Bcc header kept:\n{stored}"
    );
    assert!(
        !stored.contains("frank"),
        "Bcc continuation kept:\n{stored}"
    );
    assert!(stored.contains("\r\nCc: dave@example.net\r\n"));
}

#[test]
fn a_lone_dot_ends_the_message_unless_dash_i() {
    let env = Env::new();
    let msg = b"Subject: dots\n\nbefore\n.\nafter\n";
    assert!(env.send(&["a@example.net"], msg).status.success());
    assert!(env.send(&["-oi", "a@example.net"], msg).status.success());
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 2));
    daemon.stop();
    let bodies: Vec<String> = stored_messages(&env.spool)
        .into_iter()
        .map(|(_, b)| String::from_utf8(b).unwrap())
        .collect();
    assert_eq!(
        bodies.iter().filter(|b| b.ends_with("before\r\n")).count(),
        1
    );
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.ends_with("before\r\n.\r\nafter\r\n"))
            .count(),
        1
    );
}

#[test]
fn sendmail_and_mailq_personalities() {
    let env = Env::new();
    let sendmail = env.dir.path().join("sendmail");
    let mailq = env.dir.path().join("mailq");
    std::os::unix::fs::symlink(common::BIN, &sendmail).unwrap();
    std::os::unix::fs::symlink(common::BIN, &mailq).unwrap();
    let mut cmd = std::process::Command::new(&sendmail);
    cmd.args([
        "-C",
        env.config.to_str().unwrap(),
        "-oi",
        "-f",
        "me@edge.test",
        "rcpt@example.net",
    ]);
    let out = common::run_with_input(cmd, &message("via sendmail"));
    assert!(out.status.success(), "{}", text(&out));
    let mut cmd = std::process::Command::new(&mailq);
    cmd.env("FERRYMAIL_CONFIG", &env.config);
    let out = common::run_with_input(cmd, b"");
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("<me@edge.test>") && listing.contains("rcpt@example.net"),
        "{listing}"
    );
    let mut cmd = std::process::Command::new(&sendmail);
    cmd.args(["-C", env.config.to_str().unwrap(), "-bp"]);
    let out = common::run_with_input(cmd, b"");
    // The same listing, but for the message's age, which may have ticked on meanwhile.
    let without_age = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .map(|l| match l.strip_prefix("(maildrop)") {
                Some(rest) => rest
                    .split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" "),
                None => l.to_owned(),
            })
            .collect()
    };
    assert_eq!(
        without_age(&String::from_utf8_lossy(&out.stdout)),
        without_age(&listing)
    );
    // -q with no daemon: said plainly, exit 69.
    let mut cmd = std::process::Command::new(&sendmail);
    cmd.args(["-C", env.config.to_str().unwrap(), "-q"]);
    let out = common::run_with_input(cmd, b"");
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out).contains("no ferrymail daemon"), "{}", text(&out));
}

#[test]
fn refused_inputs_exit_with_their_code_and_queue_nothing() {
    let env = Env::with_config("[accept]\nmax_message_size = \"2KiB\"");
    let big = format!("Subject: big\n\n{}\n", "x".repeat(4096));
    let cases: Vec<(&[&str], Vec<u8>, i32)> = vec![
        (
            &["-f", "a@b.example\r\nRCPT TO:<x@y.example>", "r@x.example"],
            message("m"),
            64,
        ),
        (&["r@x.example\nevil@y.example"], message("m"), 64),
        (
            &["-F", "Name\nBcc: victim@y.example", "r@x.example"],
            message("m"),
            64,
        ),
        (&[], message("m"), 64),
        (&["-t"], b"Subject: nobody\n\nno recipients\n".to_vec(), 64),
        (&["-Z", "r@x.example"], message("m"), 64),
        (&["bad@@x.example"], message("m"), 64),
        (&["r@x.example"], b"Subject: nul\n\na\0b\n".to_vec(), 65),
        (&["r@x.example"], big.into_bytes(), 65),
        (&["-t"], b"To: not an address <\n\nx\n".to_vec(), 65),
    ];
    for (args, input, code) in cases {
        let out = env.send(args, &input);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        let err = text(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
    }
    assert!(
        env.files_in("maildrop/new").is_empty(),
        "something was queued"
    );
    assert!(
        env.files_in("maildrop/tmp").is_empty(),
        "a partial drop was left"
    );
    assert!(env.queue_json().is_empty());
}

#[test]
fn a_sendmail_killed_mid_input_queues_nothing() {
    let env = Env::new();
    let mut child = env
        .cmd(&["send", "r@example.net"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"Subject: half\n\nthe first half of a")
        .unwrap();
    stdin.flush().unwrap();
    assert!(wait_for(Duration::from_secs(10), || !env
        .files_in("maildrop/tmp")
        .is_empty()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.files_in("maildrop/new").is_empty());
    let daemon = env.start_daemon();
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.queued().is_empty());
    daemon.stop();
}

/// A local program's line longer than 998 octets (RFC 5322 §2.1.1) is folded as the
/// message is picked up, as Postfix's client folds it: CRLF and a space, nothing lost.
#[test]
fn long_lines_from_local_programs_are_folded() {
    let env = Env::new();
    let daemon = env.start_daemon();
    let long = "z".repeat(2500);
    let message = format!("Subject: cron output\n\n{long}\nend\n");
    assert!(
        env.send(&["root@far.example"], message.as_bytes())
            .status
            .success()
    );
    assert!(wait_for(Duration::from_secs(10), || env.queued().len() == 1));
    let stored = common::stored_messages(&env.spool);
    let body = String::from_utf8(stored[0].1.clone()).unwrap();
    assert!(
        body.split("\r\n").all(|line| line.len() <= 998),
        "a line over 998 octets was stored"
    );
    assert!(body.replace("\r\n ", "").contains(&long), "content lost");
    assert!(daemon.log().contains("folded"), "{}", daemon.log());
    daemon.stop();
}
