//! Notices and expiry end to end, against a scripted upstream that defers one recipient
//! for ever and refuses another: the refused one bounces at once with an RFC 3464
//! failure notice; the deferred one gets a delay notice once its online age passes
//! `retry.warn_after`, then expires (4.4.7) once it passes `retry.expire_after`, and its
//! message leaves the queue. A sender asking NOTIFY=SUCCESS of an upstream without DSN
//! hears "relayed". Every notice travels the normal queue from the null sender.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::upstream::{Received, Upstream};
use common::{Env, wait_for};

fn notices(upstream: &Upstream) -> Vec<Received> {
    upstream
        .received()
        .into_iter()
        .filter(|m| m.from.is_empty())
        .collect()
}

fn text(m: &Received) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

#[test]
fn bounces_delays_expiry_and_relayed_notices() {
    let upstream = Upstream::start(
        "127.0.0.1:0",
        false,
        Arc::new(|rcpt: &str| match rcpt.split('@').next().unwrap_or("") {
            "slow" => "451 4.7.1 try again later".to_owned(),
            "gone" => "550 5.1.1 no such user".to_owned(),
            _ => "250 2.1.5 ok".to_owned(),
        }),
    );
    let edge = Env::with_config(&format!(
        "[upstream]\nsmarthost = \"{}\"\ntls = \"none\"\n[link]\nprobe_interval = \"1s\"\n\
         [retry]\ninitial = \"1s\"\nmax = \"1s\"\nwarn_after = \"2s\"\nexpire_after = \"4s\"\n",
        upstream.addr
    ));
    let daemon = edge.start_daemon();
    let from = ["-f", "alice@home.example"];
    assert!(
        edge.send(
            &[&from[..], &["gone@far.example"]].concat(),
            b"Subject: refused\n\nx\n"
        )
        .status
        .success()
    );
    assert!(
        wait_for(Duration::from_secs(10), || notices(&upstream).len() == 1),
        "{}",
        daemon.log()
    );
    let bounce = text(&notices(&upstream)[0]);
    assert_eq!(notices(&upstream)[0].rcpts, ["alice@home.example"]);
    assert!(
        bounce.contains("Action: failed") && bounce.contains("Status: 5.1.1"),
        "{bounce}"
    );

    assert!(
        edge.send(
            &[&from[..], &["slow@far.example"]].concat(),
            b"Subject: slow\n\nx\n"
        )
        .status
        .success()
    );
    assert!(
        wait_for(Duration::from_secs(20), || notices(&upstream).len() == 3),
        "{}",
        daemon.log()
    );
    let delay = text(&notices(&upstream)[1]);
    assert!(delay.contains("Action: delayed"), "{delay}");
    let expired = text(&notices(&upstream)[2]);
    assert!(
        expired.contains("Action: failed") && expired.contains("Status: 4.4.7"),
        "{expired}"
    );
    assert!(expired.contains("expired after"), "{expired}");
    assert!(wait_for(Duration::from_secs(5), || edge
        .queued()
        .is_empty()));
    assert!(daemon.log().contains("expired"));

    assert!(
        edge.send(
            &[&from[..], &["-N", "success", "bob@far.example"]].concat(),
            b"Subject: tell me\n\nx\n"
        )
        .status
        .success()
    );
    assert!(wait_for(Duration::from_secs(10), || notices(&upstream)
        .len()
        == 4));
    let relayed = text(&notices(&upstream)[3]);
    assert!(relayed.contains("Action: relayed"), "{relayed}");
    daemon.stop();
}

/// A bounce nobody can receive (its own notice refused) is a double bounce: without an
/// `admin` address it stays in the queue, marked kept, listed and counted, survives a
/// rebuilt index (the journal remembers it), and leaves only when the operator deletes
/// it; with `admin` set, the failure goes there instead.
#[test]
fn a_double_bounce_is_kept_for_the_operator_or_sent_to_the_admin() {
    let upstream = Upstream::start(
        "127.0.0.1:0",
        false,
        Arc::new(|rcpt: &str| match rcpt.split('@').next().unwrap_or("") {
            "gone" => "550 5.1.1 no such user".to_owned(),
            _ => "250 2.1.5 ok".to_owned(),
        }),
    );
    let base = format!(
        "[upstream]\nsmarthost = \"{}\"\ntls = \"none\"\n[link]\nprobe_interval = \"1s\"\n",
        upstream.addr
    );
    let edge = Env::with_config(&base);
    let daemon = edge.start_daemon();
    let bounce_twice = |env: &Env| {
        let sent = env.send(
            &["-f", "gone@home.example", "gone@far.example"],
            b"Subject: nobody home\n\nx\n",
        );
        assert!(sent.status.success());
    };
    bounce_twice(&edge);
    let kept = |env: &Env| -> Vec<serde_json::Value> {
        env.queued()
            .into_iter()
            .filter(|e| e["kept"] == true)
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(20), || kept(&edge).len() == 1
            && edge.queued().len() == 1),
        "{:?}\n{}",
        edge.queue_json(),
        daemon.log()
    );
    let entry = &kept(&edge)[0];
    assert_eq!(entry["sender"], "");
    assert_eq!(entry["recipients"][0]["address"], "gone@home.example");
    assert_eq!(entry["recipients"][0]["state"], "bounced");
    let id = entry["id"].as_str().unwrap().to_owned();
    assert!(daemon.log().contains("double bounce"), "{}", daemon.log());
    let status = edge.run(&["status"], b"");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("kept:      1 failed notice"), "{status}");
    let listing = edge.run(&["queue"], b"");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("failed notice kept"), "{listing}");
    daemon.stop();

    // The index rebuilt from the files and the journal still keeps it.
    for name in ["index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"] {
        let _ = std::fs::remove_file(edge.spool.join(name));
    }
    let daemon = edge.start_daemon();
    assert_eq!(kept(&edge).len(), 1, "{}", daemon.log());
    let deleted = edge.run(&["queue", "delete", &id], b"");
    assert!(deleted.status.success());
    assert!(wait_for(Duration::from_secs(10), || edge
        .queued()
        .is_empty()));
    daemon.stop();

    let with_admin = Env::with_config(&format!("admin = \"postmaster@home.example\"\n{base}"));
    let daemon = with_admin.start_daemon();
    bounce_twice(&with_admin);
    let to_admin = || {
        notices(&upstream)
            .into_iter()
            .filter(|m| m.rcpts == ["postmaster@home.example"])
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(20), || to_admin().len() == 1
            && with_admin.queued().is_empty()),
        "{:?}\n{}",
        with_admin.queue_json(),
        daemon.log()
    );
    let double = text(&to_admin()[0]);
    assert!(
        double.contains("To: <postmaster@home.example>")
            && double.contains("Subject: Undeliverable Delivery Status Notification")
            && double.contains("Final-Recipient: rfc822; gone@home.example")
            && double.contains("Status: 5.1.1"),
        "{double}"
    );
    daemon.stop();
}

/// Backscatter: a bounce of mail from an unauthenticated client outside
/// `relay_networks` (whose sender anyone could forge) carries the headers only, even
/// with RET=FULL; the same message from a relay network gets its content back.
#[test]
fn a_bounce_to_a_sender_anyone_could_forge_carries_the_headers_only() {
    let upstream = Upstream::start(
        "127.0.0.1:0",
        false,
        Arc::new(|rcpt: &str| match rcpt.split('@').next().unwrap_or("") {
            "gone" => "550 5.1.1 no such user".to_owned(),
            _ => "250 2.1.5 ok".to_owned(),
        }),
    );
    let port = common::free_port();
    let hub = Env::with_config(&format!(
        "[[listen]]\naddr = \"127.0.0.1:{port}\"\n\
         [accept]\nrelay_networks = [\"127.0.0.1/32\"]\nlocal_domains = [\"here.example\"]\n\
         [upstream]\nsmarthost = \"127.0.0.1:{0}\"\ntls = \"none\"\n\
         [[route]]\ndomains = [\"here.example\"]\nvia = \"127.0.0.1:{0}\"\ntls = \"none\"\n\
         [link]\nprobe_interval = \"1s\"\n",
        upstream.addr.port()
    ));
    let daemon = hub.start_daemon();
    let send_from = |source: &str, sender: &str| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import smtplib,sys; s=smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20, \
                 source_address=(sys.argv[2], 0)); s.ehlo('client.example'); \
                 s.sendmail(sys.argv[3], ['gone@here.example'], \
                 'Subject: returned\\r\\n\\r\\nSECRET BODY\\r\\n', mail_options=['RET=FULL']); s.quit()",
                &port.to_string(),
                source,
                sender,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let bounce_to = |sender: &str| {
        notices(&upstream)
            .into_iter()
            .find(|m| m.rcpts == [sender])
            .map(|m| text(&m))
    };
    send_from("127.0.0.2", "forged@victim.example");
    assert!(
        wait_for(Duration::from_secs(20), || bounce_to(
            "forged@victim.example"
        )
        .is_some()),
        "{}",
        daemon.log()
    );
    let backscatter = bounce_to("forged@victim.example").unwrap();
    assert!(
        backscatter.contains("Subject: returned") && !backscatter.contains("SECRET BODY"),
        "{backscatter}"
    );
    assert!(backscatter.contains("text/rfc822-headers"), "{backscatter}");

    send_from("127.0.0.1", "colleague@victim.example");
    assert!(wait_for(Duration::from_secs(20), || bounce_to(
        "colleague@victim.example"
    )
    .is_some()));
    let returned = bounce_to("colleague@victim.example").unwrap();
    assert!(returned.contains("SECRET BODY"), "{returned}");
    daemon.stop();
}
