//! Notices and expiry end to end, against a scripted upstream that defers one recipient
//! for ever and refuses another: the refused one bounces at once with an RFC 3464
//! failure notice; the deferred one gets a delay notice once its online age passes
//! `retry.warn_after`, then expires (4.4.7) once it passes `retry.expire_after`, and its
//! message leaves the queue. A sender asking NOTIFY=SUCCESS of an upstream without DSN
//! hears "relayed". Every notice travels the normal queue from the null sender.

mod common;

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
