//! Delivery end to end with two real daemons: an edge relaying through a hub as its
//! smarthost. Mail is delivered and leaves the edge's queue; a refused recipient bounces
//! with a DSN that reaches the sender (at the hub); a hub that is down leaves mail
//! deferred without counting an attempt, and `flush --wait` delivers it once the hub is
//! back. Hold routes keep mail `held` until a flush names the domain.

use crate::common;

use std::time::Duration;

use common::{Env, free_port, stored_messages, wait_for};

/// The hub: it holds mail for hub.example (for an edge to collect); nobody may relay.
fn hub(port: u16) -> Env {
    Env::with_config(&format!(
        "[[listen]]\naddr = \"127.0.0.1:{port}\"\n[accept]\nrelay_networks = []\nlocal_domains = [\"hub.example\"]\n\
         [[route]]\ndomains = [\"hub.example\"]\nhold = true\n"
    ))
}

/// The edge: everything goes through the hub, retried quickly after a link failure.
fn edge(hub_port: u16, extra: &str) -> Env {
    Env::with_config(&format!(
        "[upstream]\nsmarthost = \"127.0.0.1:{hub_port}\"\ntls = \"none\"\n[link]\nprobe_interval = \"1s\"\n{extra}"
    ))
}

fn recipient_states(env: &Env) -> Vec<String> {
    env.queued()
        .iter()
        .flat_map(|e| e["recipients"].as_array().unwrap().clone())
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_edge_delivers_through_its_hub_and_bounces_come_back() {
    let port = free_port();
    let hub = hub(port);
    let hub_daemon = hub.start_daemon();
    let edge = edge(port, "");
    let edge_daemon = edge.start_daemon();

    let out = edge.send(
        &["-f", "alice@hub.example", "bob@hub.example"],
        b"Subject: over the link\n\nhello hub\n",
    );
    assert!(out.status.success());
    assert!(
        wait_for(Duration::from_secs(30), || hub.queued().len() == 1),
        "not delivered to the hub"
    );
    assert!(
        wait_for(Duration::from_secs(10), || edge.queued().is_empty()),
        "left in the edge queue: {:?}",
        edge.queued()
    );
    let (_, at_hub) = &stored_messages(&hub.spool)[0];
    let text = String::from_utf8_lossy(at_hub);
    assert!(
        text.contains("Subject: over the link") && text.contains("by edge.test (ferrymail"),
        "{text}"
    );
    assert!(
        text.starts_with("Received: from edge.test"),
        "the hub's trace header first: {text}"
    );

    // The hub refuses to relay: the recipient bounces and alice gets a DSN at the hub.
    let out = edge.send(
        &["-f", "alice@hub.example", "victim@elsewhere.example"],
        b"Subject: refused\n\nx\n",
    );
    assert!(out.status.success());
    assert!(
        wait_for(Duration::from_secs(30), || hub.queued().len() == 2),
        "no DSN at the hub"
    );
    assert!(wait_for(Duration::from_secs(10), || edge
        .queued()
        .is_empty()));
    let dsn = hub
        .queued()
        .into_iter()
        .find(|e| e["sender"] == "")
        .expect("a DSN from <>");
    assert_eq!(dsn["recipients"][0]["address"], "alice@hub.example");
    let log = edge_daemon.log();
    assert!(
        log.contains("bounced") && log.contains("DSN queued"),
        "{log}"
    );
    edge_daemon.stop();
    hub_daemon.stop();
}

#[test]
fn a_hub_that_is_down_defers_without_an_attempt_and_flush_delivers_later() {
    let port = free_port();
    let hub = hub(port);
    let edge = edge(port, "");
    let edge_daemon = edge.start_daemon();
    assert!(
        edge.send(&["bob@hub.example"], b"Subject: while down\n\nx\n")
            .status
            .success()
    );
    // The probe or the first try finds the hub down: the mail waits for the link.
    assert!(
        wait_for(Duration::from_secs(20), || edge
            .queued()
            .first()
            .is_some_and(|e| e["recipients"][0]["last_reply"]
                .as_str()
                .is_some_and(|r| r.contains("refused")))),
        "{:?}",
        edge.queued()
    );
    let r = &edge.queued()[0]["recipients"][0];
    assert_eq!(r["attempts"], 0, "our link being down is not an attempt");
    assert_ne!(r["state"], "in_flight");

    let hub_daemon = hub.start_daemon();
    let out = edge.run(&["flush", "--wait"], b"");
    assert!(
        out.status.success(),
        "flush --wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(edge.queued().is_empty());
    assert_eq!(hub.queued().len(), 1);
    edge_daemon.stop();
    hub_daemon.stop();
}

#[test]
fn a_hold_route_keeps_mail_until_a_flush_names_the_domain() {
    let port = free_port();
    let hub = hub(port);
    let hub_daemon = hub.start_daemon();
    // Like a hub holding an edge's domain: keep it, then deliver it via the route.
    let route = format!(
        "[[route]]\ndomains = [\"hub.example\"]\nvia = \"127.0.0.1:{port}\"\ntls = \"none\"\nhold = true\n"
    );
    let edge = edge(port, &route);
    let edge_daemon = edge.start_daemon();
    assert!(
        edge.send(&["bob@hub.example"], b"Subject: held\n\nx\n")
            .status
            .success()
    );
    assert!(
        wait_for(Duration::from_secs(20), || recipient_states(&edge)
            == ["held"]),
        "{:?}",
        edge.queued()
    );
    // A flush of everything does not open a hold.
    assert!(edge.run(&["flush", "--wait"], b"").status.success());
    assert_eq!(recipient_states(&edge), ["held"]);
    assert!(hub.queued().is_empty());
    // Naming the domain does.
    let out = edge.run(&["flush", "--domain", "hub.example", "--wait"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(edge.queued().is_empty());
    assert_eq!(hub.queued().len(), 1);
    edge_daemon.stop();
    hub_daemon.stop();
}

#[test]
fn sigkill_during_delivery_loses_nothing() {
    const N: usize = 300;
    let port = free_port();
    let hub = hub(port);
    let hub_daemon = hub.start_daemon();
    let edge = edge(port, "");
    // Fill the edge's maildrop while it is down, so delivery starts with a backlog.
    common::fill_maildrop(&edge, N, "bob@hub.example");
    let mut edge_daemon = edge.start_daemon();
    assert!(
        wait_for(Duration::from_secs(60), || hub.queued().len() >= 20),
        "delivery never started"
    );
    edge_daemon.kill9();
    let at_kill = hub.queued().len();
    assert!(
        at_kill < N,
        "delivery finished before the kill; the test needs a bigger N"
    );

    let edge_daemon = edge.start_daemon();
    assert!(
        wait_for(Duration::from_secs(120), || edge.queued().is_empty()),
        "edge still holds {:?}",
        edge.queued().len()
    );
    edge_daemon.stop();
    hub_daemon.stop();
    let stored = stored_messages(&hub.spool);
    let markers = common::markers(stored.iter().map(|(_, b)| b.as_slice()));
    let distinct: std::collections::HashSet<&String> = markers.iter().collect();
    assert_eq!(distinct.len(), N, "lost {} message(s)", N - distinct.len());
    let duplicates = markers.len() - N;
    eprintln!("killed with {at_kill} at the hub; {duplicates} duplicate(s) after the restart");
    // Duplicates only inside the RFC 1047 window. Deliveries are recorded as their replies
    // arrive, so what remains is the pipeline: what the edge had written and the hub had
    // not answered, which the hub commits after the edge has died. The window bounds it.
    assert!(
        duplicates <= ferrymail::delivery::window::WINDOW_MESSAGES,
        "{duplicates} duplicates"
    );
}

/// Without CHUNKING each message waits for its reply before the next is sent, so a
/// SIGKILL between the upstream's 250 and its recording repeats at most that one.
#[test]
fn sigkill_during_data_delivery_repeats_at_most_one_message() {
    const N: usize = 200;
    let upstream = common::upstream::Upstream::accepting("127.0.0.1:0");
    let edge = edge(upstream.addr.port(), "");
    common::fill_maildrop(&edge, N, "bob@hub.example");
    let mut edge_daemon = edge.start_daemon();
    assert!(
        wait_for(Duration::from_secs(60), || upstream.received().len() >= 20),
        "delivery never started"
    );
    edge_daemon.kill9();
    let at_kill = upstream.received().len();
    assert!(
        at_kill < N,
        "finished before the kill; the test needs a bigger N"
    );
    let edge_daemon = edge.start_daemon();
    assert!(wait_for(Duration::from_secs(60), || edge
        .queued()
        .is_empty()));
    edge_daemon.stop();
    let received = upstream.received();
    let markers = common::markers(received.iter().map(|m| m.data.as_slice()));
    let distinct: std::collections::HashSet<&String> = markers.iter().collect();
    assert_eq!(distinct.len(), N, "lost {} message(s)", N - distinct.len());
    let duplicates = markers.len() - N;
    eprintln!("killed with {at_kill} delivered; {duplicates} duplicate(s) after the restart");
    assert!(duplicates <= 1, "{duplicates} duplicates");
}
