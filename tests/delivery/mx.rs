//! Direct MX delivery (RFC 5321 §5.1) against a real DNS server in the test (hickory-
//! server) and scripted upstreams on loopback: preference order with the best host
//! down, the implicit MX, a null MX (RFC 7505, bounce 5.1.10), NXDOMAIN (bounce 5.1.2),
//! SERVFAIL (deferred: an attempt, never a bounce), a resolver that never answers (our
//! link: no attempt), and an MX pointing back at us (loop, 5.4.6). Routes say
//! `via = "mx:PORT"` so the MX hosts are reached on the test's port.

use crate::common;
#[path = "../common/dns.rs"]
mod dns;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Env, free_port, wait_for};
use dns::{Lie, Rr};

fn recipient(env: &Env, address: &str) -> Option<serde_json::Value> {
    env.queued()
        .iter()
        .flat_map(|e| e["recipients"].as_array().unwrap().clone())
        .find(|r| r["address"] == address)
}

#[test]
fn mx_delivery_follows_dns() {
    let lo = Ipv4Addr::LOCALHOST;
    // The upstream listens on 127.0.0.1 only: 127.0.0.9 on the same port refuses.
    let upstream = Upstream::accepting("127.0.0.1:0");
    let port = upstream.addr.port();
    let edge_port = free_port();
    let resolver = dns::serve(
        "test.",
        vec![
            Rr::Mx("pref.test.", 10, "down.pref.test."),
            Rr::Mx("pref.test.", 20, "up.pref.test."),
            Rr::A("down.pref.test.", Ipv4Addr::new(127, 0, 0, 9)),
            Rr::A("up.pref.test.", lo),
            Rr::A("plain.test.", lo),
            Rr::Mx("nullmx.test.", 0, "."),
            Rr::Mx("loop.test.", 10, "me.test."),
            Rr::A("me.test.", lo),
        ],
    );
    let edge = Env::with_config(&format!(
        "[[listen]]\naddr = \"127.0.0.1:{edge_port}\"\n\
         [[route]]\ndomains = [\"loop.test\"]\nvia = \"mx:{edge_port}\"\ntls = \"none\"\n\
         [[route]]\ndomains = [\".test\"]\nvia = \"mx:{port}\"\ntls = \"none\"\n\
         [dns]\nservers = [\"{resolver}\"]\n[retry]\ninitial = \"1h\"\n"
    ));
    let daemon = edge.start_daemon();
    for rcpt in [
        "a@pref.test",
        "b@plain.test",
        "c@nullmx.test",
        "d@nowhere.test",
        "e@x.broken.test",
        "f@loop.test",
    ] {
        let out = edge.send(&["-f", "alice@pref.test", rcpt], b"Subject: mx\n\nx\n");
        assert!(out.status.success());
    }
    assert!(
        wait_for(Duration::from_secs(20), || {
            let got = upstream.received();
            got.iter().any(|m| m.rcpts == ["a@pref.test"])
                && got.iter().any(|m| m.rcpts == ["b@plain.test"])
        }),
        "{}",
        daemon.log()
    );
    // The failures bounce to alice@pref.test, whose MX is the upstream: each notice says why.
    let notice = |status: &str, rcpt: &str| {
        upstream.received().iter().any(|m| {
            let t = String::from_utf8_lossy(&m.data);
            m.from.is_empty() && t.contains(&format!("Status: {status}")) && t.contains(rcpt)
        })
    };
    assert!(
        wait_for(Duration::from_secs(20), || notice(
            "5.1.10",
            "c@nullmx.test"
        ) && notice(
            "5.1.2",
            "d@nowhere.test"
        ) && notice(
            "5.4.6",
            "f@loop.test"
        )),
        "{}",
        daemon.log()
    );
    // SERVFAIL: deferred, an attempt, never bounced.
    let broken = recipient(&edge, "e@x.broken.test").expect("still queued");
    assert_eq!(broken["state"], "deferred", "{broken}");
    assert_eq!(broken["attempts"], 1, "{broken}");
    assert!(
        broken["last_reply"].as_str().unwrap().contains("SERVFAIL"),
        "{broken}"
    );
    assert!(
        !notice("4.4.3", "e@x.broken.test"),
        "no bounce for a temporary DNS failure"
    );
    let log = daemon.log();
    let tried_best = log.find("host=\"down.pref.test\"");
    let delivered = log.find("to=a@pref.test relay=up.pref.test");
    assert!(
        tried_best.is_some() && delivered.is_some() && tried_best < delivered,
        "the best MX first, then the next: {log}"
    );
    daemon.stop();
}

#[test]
fn a_resolver_that_never_answers_is_our_link() {
    let resolver = dns::serve("test.", vec![]);
    let edge = Env::with_config(&format!(
        "[[route]]\ndomains = [\".test\"]\nvia = \"mx:2525\"\n[dns]\nservers = [\"{resolver}\"]\n"
    ));
    let daemon = edge.start_daemon();
    let out = edge.send(&["x@a.silent.test"], b"Subject: mx\n\nx\n");
    assert!(out.status.success());
    assert!(
        wait_for(Duration::from_secs(30), || recipient(
            &edge,
            "x@a.silent.test"
        )
        .is_some_and(|r| r["last_reply"]
            .as_str()
            .is_some_and(|s| s.contains("DNS")))),
        "{}",
        daemon.log()
    );
    let r = recipient(&edge, "x@a.silent.test").unwrap();
    assert_eq!(
        r["attempts"], 0,
        "no answer from DNS is not an attempt: {r}"
    );
    assert_ne!(r["state"], "bounced");
    daemon.stop();
}

/// A resolver that lies, as offline LAN resolvers and captive portals do: first NXDOMAIN
/// for every name, then an address for every name that does not exist. Mail to domains
/// that exist waits for the link meanwhile (no attempt, no bounce); once the resolver
/// tells the truth, everything leaves.
#[test]
fn a_lying_resolver_bounces_nothing() {
    let lo = Ipv4Addr::LOCALHOST;
    let upstream = Upstream::accepting("127.0.0.1:0");
    let port = upstream.addr.port();
    let (resolver, lies) = dns::serve_lying(
        "test.",
        vec![Rr::A("one.test.", lo), Rr::Mx("two.test.", 10, "one.test.")],
    );
    lies.set(Lie::NxDomain);
    let edge = Env::with_config(&format!(
        "[[route]]\ndomains = [\".test\"]\nvia = \"mx:{port}\"\ntls = \"none\"\n\
         [dns]\nservers = [\"{resolver}\"]\n[link]\nprobe_interval = \"1s\"\n"
    ));
    let daemon = edge.start_daemon();
    for rcpt in ["a@one.test", "b@two.test"] {
        let out = edge.send(&[rcpt], format!("Subject: to {rcpt}\n\nx\n").as_bytes());
        assert!(out.status.success());
    }
    let waiting = |why: &str| {
        let r: Vec<serde_json::Value> = ["a@one.test", "b@two.test"]
            .iter()
            .filter_map(|a| recipient(&edge, a))
            .collect();
        r.len() == 2
            && r.iter().all(|r| {
                r["link_wait"] == true
                    && r["attempts"] == 0
                    && r["last_reply"].as_str().is_some_and(|s| s.contains(why))
            })
    };
    assert!(
        wait_for(Duration::from_secs(30), || waiting("NS records")),
        "an NXDOMAIN-for-everything resolver was believed: {:?}",
        edge.queued()
    );
    lies.set(Lie::Hijack);
    let gate_says = |why: &str| {
        let out = edge.run(&["status", "--json"], b"");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["routes"].as_array().is_some_and(|routes| {
            routes.iter().any(|r| {
                r["state"] == "down" && r["reason"].as_str().is_some_and(|s| s.contains(why))
            })
        })
    };
    assert!(
        wait_for(Duration::from_secs(30), || gate_says("cannot exist")),
        "a resolver answering for names that cannot exist was believed"
    );
    assert!(waiting("NS records"), "{:?}", edge.queued());
    assert!(
        edge.queued().len() == 2 && upstream.received().is_empty(),
        "{:?}",
        edge.queued()
    );
    assert!(
        recipient(&edge, "a@one.test").is_some_and(|r| r["attempts"] == 0),
        "{:?}",
        edge.queued()
    );
    lies.set(Lie::None);
    assert!(
        wait_for(Duration::from_secs(30), || edge.queued().is_empty()),
        "the truth did not deliver: {:?}",
        edge.queued()
    );
    assert_eq!(upstream.received().len(), 2);
    let log = daemon.log();
    assert!(!log.contains("bounced"), "{log}");
    daemon.stop();
}
