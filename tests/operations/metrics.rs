//! The metrics endpoint: well-formed Prometheus text whose queue gauges match
//! `queue --json`, the link gates and delivery counters; 404 elsewhere.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Env, free_port, wait_for};

fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// Parses the exposition: every sample line `name{labels} value`, checking the format.
fn samples(body: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment line {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("ferrymail_")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "metric name {name:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        out.push((series.to_owned(), value));
    }
    out
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

#[test]
fn the_exposition_matches_the_queue() {
    let upstream = Upstream::start(
        "127.0.0.1:0",
        false,
        std::sync::Arc::new(|rcpt: &str| {
            if rcpt.starts_with("later") {
                "451 4.7.1 later".into()
            } else {
                "250 ok".into()
            }
        }),
    );
    let port = free_port();
    let env = Env::with_config(&format!(
        "[upstream]\nsmarthost = \"{}\"\ntls = \"none\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        upstream.addr
    ));
    let daemon = env.start_daemon();
    for rcpt in ["now@far.example", "later@far.example", "later2@far.example"] {
        assert!(env.send(&[rcpt], b"Subject: m\n\nx\n").status.success());
    }
    assert!(wait_for(Duration::from_secs(20), || {
        let q = env.queued();
        q.len() == 2 && q.iter().all(|e| e["recipients"][0]["state"] == "deferred")
    }));
    let (head, body) = get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let s = samples(&body);
    let listed = env.queued();
    let deferred = listed
        .iter()
        .flat_map(|e| e["recipients"].as_array().unwrap().clone())
        .filter(|r| r["state"] == "deferred")
        .count() as f64;
    assert_eq!(
        value(&s, r#"ferrymail_queue_recipients{state="deferred"}"#),
        Some(deferred),
        "{body}"
    );
    assert_eq!(
        value(&s, r#"ferrymail_queue_recipients{state="queued"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "ferrymail_queue_messages"),
        Some(listed.len() as f64)
    );
    assert_eq!(
        value(&s, r#"ferrymail_queue_route_recipients{route="upstream"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&s, r#"ferrymail_link_state{route="upstream",state="up"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&s, r#"ferrymail_link_gate_open{route="upstream"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            r#"ferrymail_recipients_total{route="upstream",outcome="delivered"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            r#"ferrymail_recipients_total{route="upstream",outcome="deferred"}"#
        ),
        Some(2.0)
    );
    assert!(value(&s, r#"ferrymail_sent_bytes_total{route="upstream"}"#).unwrap() > 0.0);
    assert_eq!(value(&s, "ferrymail_messages_accepted_total"), Some(3.0));
    assert!(value(&s, "ferrymail_queue_oldest_age_seconds").is_some());

    let (head, _) = get(port, "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    daemon.stop();
}
