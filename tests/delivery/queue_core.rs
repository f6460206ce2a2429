//! The queue owner, black-box: a released message is delivered at once, a flush naming
//! a domain moves that domain's mail only, a damaged spool file (truncated, or one byte
//! changed) is quarantined and its sender told, a rebuilt index forgets no delivery,
//! retries pushed a year out come back within `retry.max` at start, and kill -9 during
//! delivery repeats at most the window and never writes two failure notices for one
//! bounce.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{Env, fill_maildrop, free_port, markers, wait_for};

/// An edge relaying through `127.0.0.1:port`, probing every second.
fn edge(port: u16, extra: &str) -> Env {
    Env::with_config(&format!(
        "[upstream]\nsmarthost = \"127.0.0.1:{port}\"\ntls = \"none\"\n[link]\nprobe_interval = \"1s\"\n{extra}"
    ))
}

fn recipients(env: &Env) -> Vec<serde_json::Value> {
    env.queued()
        .iter()
        .flat_map(|e| e["recipients"].as_array().unwrap().clone())
        .collect()
}

fn ok(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_released_message_is_delivered_at_once() {
    let port = free_port();
    let env = edge(port, "");
    let daemon = env.start_daemon();
    ok(env.send(&["bob@far.test"], b"Subject: held\n\nx\n"));
    assert!(
        wait_for(Duration::from_secs(20), || recipients(&env)
            .first()
            .is_some_and(|r| r["link_wait"] == true)),
        "the mail never waited for the link: {:?}",
        env.queued()
    );
    let id = env.queued()[0]["id"].as_str().unwrap().to_owned();
    ok(env.run(&["queue", "hold", &id], b""));
    let upstream = Upstream::accepting(&format!("127.0.0.1:{port}"));
    assert!(
        wait_for(Duration::from_secs(20), || upstream
            .connections
            .load(Ordering::Relaxed)
            > 0),
        "the link never came up"
    );
    assert!(upstream.received().is_empty(), "held mail left");
    assert_eq!(recipients(&env)[0]["state"], "held");

    let released = Instant::now();
    ok(env.run(&["queue", "release", &id], b""));
    // The owner's longest sleep is a minute: delivery within seconds means the release
    // woke it.
    assert!(
        wait_for(Duration::from_secs(5), || upstream.received().len() == 1),
        "not delivered after its release; log:\n{}",
        daemon.log()
    );
    eprintln!(
        "released to delivered: {} ms",
        released.elapsed().as_millis()
    );
    daemon.stop();
}

#[test]
fn flush_wait_says_what_still_waits_and_why() {
    let port = free_port();
    let env = edge(port, "mode = \"manual\"\n");
    let daemon = env.start_daemon();
    ok(env.send(&["bob@far.test"], b"Subject: stuck\n\nx\n"));
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 1));
    let out = env.run(&["flush", "--wait"], b"");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(75), "{said}");
    assert!(
        said.contains("1 recipient(s) still waiting") && said.contains("upstream: 1 recipient(s)"),
        "{said}"
    );
    assert!(said.contains("refused"), "the reason is the link's: {said}");
    daemon.stop();
}

#[test]
fn a_flush_naming_a_domain_leaves_other_domains_alone() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let env = edge(upstream.addr.port(), "mode = \"manual\"\n");
    let daemon = env.start_daemon();
    ok(env.send(&["x@a.test"], b"Subject: for a\n\nx\n"));
    ok(env.send(&["y@b.test"], b"Subject: for b\n\ny\n"));
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 2));
    ok(env.run(&["flush", "--domain", "a.test", "--wait"], b""));
    let got: Vec<String> = upstream
        .received()
        .iter()
        .flat_map(|m| m.rcpts.clone())
        .collect();
    assert_eq!(got, ["x@a.test"], "only the named domain's mail left");
    let left = recipients(&env);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["address"], "y@b.test");
    assert_eq!(left[0]["link_wait"], true, "{left:?}");
    ok(env.run(&["flush", "--wait"], b""));
    assert_eq!(upstream.received().len(), 2);
    daemon.stop();
}

#[test]
fn a_damaged_spool_file_is_quarantined_and_its_sender_told() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let env = edge(upstream.addr.port(), "mode = \"manual\"\n");
    let daemon = env.start_daemon();
    for subject in ["truncated", "changed"] {
        let message = format!("Subject: {subject}\n\nthe body of the {subject} message\n");
        ok(env.send(
            &["-f", "alice@home.test", "bob@far.test"],
            message.as_bytes(),
        ));
    }
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 2));
    daemon.stop();
    for name in env.files_in("queue") {
        let path = env.spool.join("queue").join(&name);
        let mut bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.contains("Subject: truncated") {
            bytes.truncate(bytes.len() - 10);
        } else {
            let at = text.find("the body").unwrap();
            bytes[at] = b'T';
        }
        std::fs::write(&path, bytes).unwrap();
    }
    let daemon = env.start_daemon();
    ok(env.run(&["flush", "--wait"], b""));
    assert!(
        wait_for(Duration::from_secs(20), || env.queued().is_empty()),
        "{:?}",
        env.queued()
    );
    assert_eq!(env.files_in("corrupt").len(), 2, "both files quarantined");
    let received = upstream.received();
    assert!(
        received.iter().all(|m| m.from.is_empty()),
        "damaged content was sent: {:?}",
        received.iter().map(|m| &m.from).collect::<Vec<_>>()
    );
    assert!(
        wait_for(Duration::from_secs(20), || upstream.received().len() == 2),
        "one notice each to alice; log:\n{}",
        daemon.log()
    );
    for notice in upstream.received() {
        assert_eq!(notice.rcpts, ["alice@home.test"]);
        let text = String::from_utf8_lossy(&notice.data);
        assert!(text.contains("damaged"), "{text}");
    }
    daemon.stop();
}

#[test]
fn a_rebuilt_index_forgets_no_delivery() {
    let accept_all = Arc::new(AtomicBool::new(false));
    let accept = accept_all.clone();
    let upstream = Upstream::start(
        "127.0.0.1:0",
        true,
        Arc::new(move |rcpt: &str| {
            if rcpt.starts_with("later") && !accept.load(Ordering::Relaxed) {
                "451 4.3.0 try later".to_owned()
            } else {
                "250 2.1.5 ok".to_owned()
            }
        }),
    );
    let env = edge(upstream.addr.port(), "[retry]\ninitial = \"1h\"\n");
    let daemon = env.start_daemon();
    ok(env.send(&["now@far.test", "later@far.test"], b"Subject: two\n\nx\n"));
    assert!(
        wait_for(Duration::from_secs(20), || {
            let r = recipients(&env);
            r.len() == 2 && r[0]["state"] == "delivered" && r[1]["state"] == "deferred"
        }),
        "{:?}",
        env.queued()
    );
    daemon.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(env.spool.join(format!("index.sqlite3{suffix}")));
    }
    ok(env.run(&["queue", "reindex"], b""));
    let states: Vec<String> = recipients(&env)
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        states,
        ["delivered", "queued"],
        "the journal kept the delivery"
    );
    accept_all.store(true, Ordering::Relaxed);
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env
        .queued()
        .is_empty()));
    daemon.stop();
    let delivered: Vec<String> = upstream
        .received()
        .iter()
        .flat_map(|m| m.rcpts.clone())
        .collect();
    assert_eq!(delivered, ["now@far.test", "later@far.test"], "each once");
}

#[test]
fn a_retry_a_year_away_is_brought_back_at_start() {
    let env = Env::new();
    let daemon = env.start_daemon();
    ok(env.send(&["bob@far.test"], b"Subject: late\n\nx\n"));
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 1));
    daemon.stop();
    let year = ferrymail::spool::now_unix() + 365 * 86400;
    let conn = ferrymail::spool::index::open_writer(&env.spool.join("index.sqlite3")).unwrap();
    conn.execute(
        "UPDATE recipient SET state = 'deferred', link_wait = 0, next_attempt_at = ?1",
        [year],
    )
    .unwrap();
    drop(conn);
    let daemon = env.start_daemon();
    // retry.max is 4h by default.
    let latest = ferrymail::spool::now_unix() + 4 * 3600 + 60;
    assert!(
        wait_for(Duration::from_secs(20), || {
            recipients(&env)[0]["next_attempt_at"]
                .as_i64()
                .is_some_and(|at| at <= latest)
        }),
        "{:?}",
        recipients(&env)
    );
    daemon.stop();
}

/// Starts the daemon, lets it work until `progress` holds (or a few seconds pass), then
/// kills it with SIGKILL; `kills` times.
fn kill_repeatedly(env: &Env, kills: usize, progress: &dyn Fn(usize) -> bool) {
    for k in 0..kills {
        let mut daemon = env.start_daemon();
        wait_for(Duration::from_secs(10), || progress(k));
        daemon.kill9();
    }
}

#[test]
fn kill_9_during_delivery_repeats_at_most_the_window_each_time() {
    const N: usize = 400;
    const KILLS: usize = 4;
    let upstream = Upstream::start(
        "127.0.0.1:0",
        true,
        Arc::new(|_: &str| "250 2.1.5 ok".to_owned()),
    );
    let env = edge(upstream.addr.port(), "");
    fill_maildrop(&env, N, "bob@far.test");
    kill_repeatedly(&env, KILLS, &|k| {
        upstream.received().len() >= (k + 1) * N / (KILLS + 2)
    });
    let daemon = env.start_daemon();
    assert!(
        wait_for(Duration::from_secs(120), || env.queued().is_empty()),
        "{} left",
        env.queued().len()
    );
    daemon.stop();
    let received = upstream.received();
    let all = markers(received.iter().map(|m| m.data.as_slice()));
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), N, "lost {}", N - distinct.len());
    let duplicates = all.len() - N;
    eprintln!("{KILLS} kills: {duplicates} duplicate(s)");
    assert!(
        duplicates <= KILLS * ferrymail::delivery::window::WINDOW_MESSAGES,
        "{duplicates} duplicates"
    );
}

#[test]
fn kill_9_while_bouncing_writes_each_notice_once() {
    const N: usize = 60;
    const KILLS: usize = 6;
    let upstream = Upstream::start(
        "127.0.0.1:0",
        true,
        Arc::new(|rcpt: &str| {
            if rcpt.starts_with("nobody") {
                "550 5.1.1 no such user".to_owned()
            } else {
                "250 2.1.5 ok".to_owned()
            }
        }),
    );
    let env = edge(upstream.addr.port(), "");
    fill_maildrop(&env, N, "nobody@far.test");
    // Notices written so far, by the original each reports: its Message-IDs.
    let written = |upstream: &Upstream| {
        let mut by_original: HashMap<String, HashSet<String>> = HashMap::new();
        for m in upstream.received() {
            assert!(m.from.is_empty(), "only notices are accepted upstream");
            let text = String::from_utf8_lossy(&m.data).into_owned();
            let header = |name: &str| {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or_else(|| panic!("no {name} in {text}"))
                    .to_owned()
            };
            by_original
                .entry(header("Subject: drop "))
                .or_default()
                .insert(header("Message-ID: "));
        }
        by_original
    };
    kill_repeatedly(&env, KILLS, &|k| {
        written(&upstream).len() >= (k + 1) * N / (KILLS + 2)
    });
    let daemon = env.start_daemon();
    assert!(
        wait_for(Duration::from_secs(120), || env.queued().is_empty()),
        "{} left",
        env.queued().len()
    );
    daemon.stop();
    let notices = written(&upstream);
    assert_eq!(notices.len(), N, "every bounce reported");
    let twice: Vec<_> = notices.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "a bounce reported by two notices: {twice:?}"
    );
    // A notice is delivered like any mail: a kill can repeat what was in flight.
    let deliveries = upstream.received().len();
    eprintln!("{KILLS} kills: {N} notices, {deliveries} deliveries of them");
    assert!(deliveries <= N + KILLS * ferrymail::delivery::window::WINDOW_MESSAGES);
}
