//! Mail for this host's own names (root, cron's mail, a script's `sendmail user`): it
//! reaches the alias or the admin address at the upstream, whichever way it came in;
//! with neither, it stays in the queue with its reason and never leaves.

use crate::common;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Env, wait_for};

fn smarthost(upstream: &Upstream, extra: &str) -> Env {
    Env::with_config(&format!(
        "{extra}\n[upstream]\nsmarthost = \"{}\"\ntls = \"none\"\n[link]\nprobe_interval = \"1s\"\n",
        upstream.addr
    ))
}

/// Runs the binary as `sendmail` with `args` and `message` on stdin.
fn sendmail(env: &Env, args: &[&str], message: &[u8]) -> std::process::Output {
    let link = env.dir.path().join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(common::BIN, &link).unwrap();
    }
    let mut cmd = std::process::Command::new(&link);
    cmd.arg("-C").arg(&env.config).args(args);
    cmd.env_remove("FERRYMAIL_CONFIG");
    common::run_with_input(cmd, message)
}

#[test]
fn cron_and_scripts_reach_the_alias_or_the_admin_at_the_upstream() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let env = smarthost(
        &upstream,
        "admin = \"owner@example.org\"\n[local]\nnames = [\"edge.lan\"]\n\
         [aliases]\nbackup = [\"ops@example.org\", \"root\"]\n",
    );
    let daemon = env.start_daemon();

    // cron's own call, word for word.
    let cron = sendmail(
        &env,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        b"Subject: Cron <root@edge> run-parts /etc/cron.daily\n\nall fine\n",
    );
    assert!(
        cron.status.success(),
        "{}",
        String::from_utf8_lossy(&cron.stderr)
    );
    // -t with a bare name in To:, and a display name around a bare name.
    let t = sendmail(
        &env,
        &["-t", "-i"],
        b"To: root\nCc: Backups <backup>\nSubject: by -t\n\nx\n",
    );
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    // A script's `sendmail user`, and an address at one of [local] names.
    let user = sendmail(
        &env,
        &["alice", "bob@EDGE.LAN"],
        b"Subject: to a user\n\nx\n",
    );
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );

    assert!(
        wait_for(Duration::from_secs(30), || upstream.received().len() == 3),
        "{:?}\n{}",
        upstream.received(),
        daemon.log()
    );
    let by_subject = |s: &str| {
        upstream
            .received()
            .into_iter()
            .find(|m| String::from_utf8_lossy(&m.data).contains(s))
            .unwrap_or_else(|| panic!("no message {s:?}"))
    };
    let cron = by_subject("run-parts");
    assert_eq!(cron.rcpts, ["owner@example.org"]);
    let cron_text = String::from_utf8_lossy(&cron.data);
    assert!(cron_text.contains("From: \"CronDaemon\" <"), "{cron_text}");
    let t = by_subject("by -t");
    assert_eq!(
        t.rcpts,
        ["owner@example.org", "ops@example.org"],
        "aliases of aliases, once"
    );
    let user = by_subject("to a user");
    assert_eq!(
        user.rcpts,
        ["owner@example.org"],
        "alice and bob: both the admin, once"
    );
    assert!(
        wait_for(Duration::from_secs(10), || env.queued().is_empty()),
        "{:?}",
        env.queue_json()
    );
    daemon.stop();
}

#[test]
fn smtp_from_the_lan_and_bounces_to_local_senders_follow_the_aliases() {
    let upstream = Upstream::start(
        "127.0.0.1:0",
        false,
        Arc::new(|rcpt: &str| {
            if rcpt.starts_with("gone@") {
                "550 5.1.1 no such user".to_owned()
            } else {
                "250 2.1.5 ok".to_owned()
            }
        }),
    );
    let env = smarthost(&upstream, "[aliases]\nroot = \"me@example.org\"\n");
    let daemon = env.start_daemon();
    // Over SMTP from a relay_networks client, to root at our hostname.
    let port = listener_port(&env);
    let mut smtp = Smtp::connect(port);
    smtp.expect("220");
    smtp.say("EHLO lan-box", "250");
    smtp.say("MAIL FROM:<logwatch@lan-box.example>", "250");
    smtp.say("RCPT TO:<root@edge.test>", "250");
    smtp.say("DATA", "354");
    smtp.say("Subject: from the lan\r\n\r\nx\r\n.", "250");
    smtp.say("QUIT", "221");
    // A local user's mail bounces: the notice goes where root's mail goes.
    let sent = env.send(
        &["-f", "root", "gone@far.example"],
        b"Subject: doomed\n\nx\n",
    );
    assert!(sent.status.success());

    assert!(
        wait_for(Duration::from_secs(30), || upstream.received().len() == 2),
        "{:?}\n{}",
        upstream.received(),
        daemon.log()
    );
    let got = upstream.received();
    let lan = got
        .iter()
        .find(|m| m.from == "logwatch@lan-box.example")
        .unwrap();
    assert_eq!(lan.rcpts, ["me@example.org"]);
    let notice = got
        .iter()
        .find(|m| m.from.is_empty())
        .expect("a failure notice");
    assert_eq!(notice.rcpts, ["me@example.org"]);
    let text = String::from_utf8_lossy(&notice.data);
    assert!(text.contains("gone@far.example"), "{text}");
    daemon.stop();
}

#[test]
fn without_admin_or_alias_local_mail_is_kept_with_its_reason() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let env = smarthost(&upstream, "");
    let daemon = env.start_daemon();
    let sent = env.send(
        &["root", "friend@example.net"],
        b"Subject: half local\n\nx\n",
    );
    assert!(sent.status.success());
    assert!(
        wait_for(Duration::from_secs(30), || upstream.received().len() == 1),
        "{}",
        daemon.log()
    );
    assert_eq!(upstream.received()[0].rcpts, ["friend@example.net"]);
    let held = || -> Vec<serde_json::Value> {
        env.queued()
            .into_iter()
            .flat_map(|e| e["recipients"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["state"] == "held")
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(10), || held().len() == 1),
        "{:?}",
        env.queue_json()
    );
    let root = &held()[0];
    assert_eq!(root["address"], "root@edge.test");
    let listing = env.run(&["queue"], b"");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("no alias and no admin address"),
        "{listing}"
    );

    // Released by the operator, it still has nowhere to go: held again, not sent.
    let released = env.run(&["queue", "release", "--all"], b"");
    assert!(released.status.success());
    let flushed = env.run(&["flush", "--wait"], b"");
    assert!(!flushed.stdout.is_empty() || !flushed.stderr.is_empty());
    assert!(
        wait_for(Duration::from_secs(10), || held().len() == 1),
        "{:?}",
        env.queue_json()
    );
    assert_eq!(upstream.received().len(), 1, "nothing more left");
    daemon.stop();
}

#[test]
fn an_alias_loop_is_refused_when_the_configuration_is_read() {
    let env = Env::with_config(
        "[aliases]\nroot = \"ops\"\nops = [\"me@example.org\", \"root@localhost\"]\n",
    );
    let out = env.run(&["config", "check"], b"");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alias loop: ops -> root -> ops"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aliases");
    std::fs::write(
        &file,
        "postmaster: root\nroot: me@example.org, |/usr/bin/procmail\n",
    )
    .unwrap();
    let env = Env::with_config(&format!("[local]\naliases_file = \"{}\"\n", file.display()));
    let out = env.run(&["config", "check"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("aliases:2: root: target \"|/usr/bin/procmail\" left out"),
        "{err}"
    );
}

/// The daemon's SMTP port, as `status` shows it.
fn listener_port(env: &Env) -> u16 {
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let addr: std::net::SocketAddr = status["listeners"][0].as_str().unwrap().parse().unwrap();
    addr.port()
}

struct Smtp {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Smtp {
            reader: std::io::BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn expect(&mut self, code: &str) {
        use std::io::BufRead;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "wanted {code}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    fn say(&mut self, line: &str, code: &str) {
        use std::io::Write;
        write!(self.writer, "{line}\r\n").unwrap();
        self.expect(code);
    }
}
