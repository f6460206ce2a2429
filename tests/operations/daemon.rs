//! The daemon under faults: kill -9 during maildrop ingestion, a deleted or damaged
//! index, damaged spool files, a second daemon on the same spool, and queue changes
//! with and without a running daemon (`delete --all` without one empties the maildrop).

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Env, stored_messages, wait_for};
use ferrymail::spool::Layout;

/// Writes `n` drops for `rcpt@example.net` straight into the maildrop.
fn fill_maildrop(env: &Env, n: usize) {
    common::fill_maildrop(env, n, "rcpt@example.net");
}

fn markers(env: &Env) -> Vec<String> {
    stored_messages(&env.spool)
        .into_iter()
        .map(|(_, b)| {
            let t = String::from_utf8(b).unwrap();
            t.lines()
                .find(|l| l.starts_with("marker-"))
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn assert_each_once(env: &Env, n: usize) {
    let listed = env.queued();
    let ids: HashSet<String> = listed
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), listed.len(), "an id listed twice");
    assert_eq!(listed.len(), n, "listed {} of {n}", listed.len());
    let m = markers(env);
    let unique: HashSet<_> = m.iter().collect();
    assert_eq!(
        unique.len(),
        n,
        "a message queued twice or lost: {} files, {} distinct",
        m.len(),
        unique.len()
    );
}

#[test]
fn kill_9_during_ingestion_then_a_deleted_index_loses_and_doubles_nothing() {
    const N: usize = 300;
    let env = Env::new();
    fill_maildrop(&env, N);
    let mut daemon = env.start_daemon();
    let layout = Layout::new(&env.spool);
    assert!(wait_for(Duration::from_secs(30), || std::fs::read_dir(
        &layout.queue
    )
    .map_or(0, |d| d.count())
        >= 20));
    daemon.kill9();
    let left = env.files_in("maildrop/new").len();
    assert!(
        left > 0,
        "ingestion finished before the kill; the test needs a bigger N"
    );

    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(60), || env
        .files_in("maildrop/new")
        .is_empty()));
    assert!(wait_for(Duration::from_secs(10), || env.queued().len() == N));
    assert_eq!(daemon.stop(), Some(0));
    assert_each_once(&env, N);
    assert!(env.files_in("tmp").is_empty());

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(env.spool.join(format!("index.sqlite3{suffix}")));
    }
    assert!(env.queued().is_empty(), "no index, nothing listed");
    let daemon = env.start_daemon();
    assert_each_once(&env, N);
    assert!(daemon.log().contains("index missing"), "{}", daemon.log());
    daemon.stop();
}

#[test]
fn reindex_rebuilds_keeping_recipient_state_and_a_damaged_index_is_replaced() {
    let env = Env::new();
    fill_maildrop(&env, 5);
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 5));
    let first = env.queued()[0]["id"].as_str().unwrap().to_owned();
    assert!(env.run(&["queue", "hold", &first], b"").status.success());

    let out = env.run(&["queue", "reindex"], b"");
    assert_eq!(
        out.status.code(),
        Some(75),
        "reindex must refuse while the daemon runs"
    );
    daemon.stop();

    let out = env.run(&["queue", "reindex"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-indexed 5 message(s)"));
    let held: Vec<_> = env
        .queued()
        .into_iter()
        .filter(|e| e["recipients"][0]["state"] == "held")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(held, [first], "hold survives a reindex");

    std::fs::write(
        env.spool.join("index.sqlite3"),
        b"this is not a database at all",
    )
    .unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(env.spool.join(format!("index.sqlite3{suffix}")));
    }
    let daemon = env.start_daemon();
    assert_each_once(&env, 5);
    assert!(daemon.log().contains("index damaged"), "{}", daemon.log());
    daemon.stop();
}

#[test]
fn damaged_spool_files_are_quarantined_not_deleted() {
    let env = Env::new();
    fill_maildrop(&env, 2);
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 2));
    daemon.stop();
    let layout = Layout::new(&env.spool);
    // A truncated committed file, a stray name, and a damaged drop.
    let victim = env.queued()[0]["id"].as_str().unwrap().to_owned();
    let path = layout.queue.join(&victim);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(env.spool.join(format!("index.sqlite3{suffix}")));
    }
    std::fs::write(layout.queue.join("stray-file"), b"junk").unwrap();
    std::fs::write(
        layout.maildrop_new.join("1.2.P3.Rbad"),
        b"ferrymail-drop 1\n{not json\n",
    )
    .unwrap();

    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(10), || env
        .files_in("maildrop/new")
        .is_empty()));
    let listed = env.queued();
    assert_eq!(listed.len(), 1);
    assert_ne!(listed[0]["id"], victim.as_str());
    let corrupt = env.files_in("corrupt");
    assert_eq!(corrupt.len(), 3, "{corrupt:?}");
    assert!(corrupt.contains(&victim) && corrupt.contains(&"stray-file".to_owned()));
    let log = daemon.log();
    assert!(log.contains("quarantined"), "{log}");
    daemon.stop();
}

#[test]
fn a_second_daemon_on_the_same_spool_refuses_to_start() {
    let env = Env::new();
    let daemon = env.start_daemon();
    let out = env.run(&["serve"], b"");
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("in use by pid {}", daemon.pid())),
        "{err}"
    );
    // The first one is unharmed.
    assert!(env.run(&["status"], b"").status.success());
    assert_eq!(daemon.stop(), Some(0));
    assert!(!env.control_socket().exists(), "control socket left behind");
}

#[test]
fn queue_changes_work_with_and_without_the_daemon() {
    let env = Env::new();
    fill_maildrop(&env, 3);
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 3));
    let ids: Vec<String> = env
        .queued()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let state = |id: &str| -> String {
        let e = env.queued().into_iter().find(|e| e["id"] == id).unwrap();
        e["recipients"][0]["state"].as_str().unwrap().to_owned()
    };

    assert!(env.run(&["queue", "hold", "--all"], b"").status.success());
    assert!(ids.iter().all(|id| state(id) == "held"));
    assert!(
        env.run(&["queue", "release", &ids[0]], b"")
            .status
            .success()
    );
    assert_eq!(state(&ids[0]), "queued");
    let out = env.run(&["queue", "delete", &ids[1], "0000000000000000"], b"");
    assert_eq!(out.status.code(), Some(66), "an unknown id is reported");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}: deleted", ids[1])));
    assert_eq!(env.queued().len(), 2);
    let out = env.run(&["queue", "show", &ids[0]], b"");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("marker-"));
    assert_eq!(
        env.run(&["queue", "show", "../../etc/passwd"], b"")
            .status
            .code(),
        Some(64)
    );
    daemon.stop();

    // Daemon down: the command takes the lock and acts itself.
    assert!(
        env.run(&["queue", "release", "--all"], b"")
            .status
            .success()
    );
    assert!(
        env.queued()
            .iter()
            .all(|e| e["recipients"][0]["state"] == "queued")
    );
    assert!(env.run(&["queue", "delete", &ids[2]], b"").status.success());
    assert_eq!(env.queued().len(), 1);
    assert!(!env.files_in("queue").contains(&ids[2]));
    assert_eq!(env.run(&["status"], b"").status.code(), Some(69));
    assert_eq!(env.run(&["flush"], b"").status.code(), Some(69));
}

#[test]
fn an_index_from_a_newer_version_is_refused_not_rebuilt() {
    let env = Env::new();
    fill_maildrop(&env, 1);
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 1));
    daemon.stop();
    set_user_version(&env, 99);
    let out = env.run(&["serve"], b"");
    assert_eq!(out.status.code(), Some(74));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 99 is newer"), "{err}");
    assert!(
        env.spool.join("index.sqlite3").exists(),
        "the newer index must be left alone"
    );
    assert!(
        !env.files_in(".").iter().any(|f| f.contains("corrupt-")),
        "the newer index was set aside"
    );
}

fn set_user_version(env: &Env, version: i64) {
    let conn = ferrymail::spool::index::open_writer(&env.spool.join("index.sqlite3")).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

#[test]
fn queue_retry_makes_waiting_mail_due_now_and_leaves_held_mail() {
    let env = Env::new();
    fill_maildrop(&env, 3);
    let daemon = env.start_daemon();
    assert!(wait_for(Duration::from_secs(20), || env.queued().len() == 3));
    daemon.stop();
    let ids: Vec<String> = env
        .queued()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    // No delivery yet, so set the scene by hand: one deferred for an hour, one held.
    let later = ferrymail::spool::now_unix() + 3600;
    let conn = ferrymail::spool::index::open_writer(&env.spool.join("index.sqlite3")).unwrap();
    conn.execute(
        "UPDATE recipient SET state = 'deferred', attempts = 2, next_attempt_at = ?1 WHERE message_id = ?2",
        rusqlite::params![later, ids[0]],
    )
    .unwrap();
    conn.execute(
        "UPDATE recipient SET state = 'held', next_attempt_at = NULL WHERE message_id = ?1",
        rusqlite::params![ids[1]],
    )
    .unwrap();
    drop(conn);
    let recipient = |id: &str| {
        env.queued().into_iter().find(|e| e["id"] == id).unwrap()["recipients"][0].clone()
    };

    // Offline, through the lock.
    let out = env.run(&["queue", "retry", &ids[0]], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = recipient(&ids[0]);
    assert_eq!(r["state"], "deferred", "retry keeps the state");
    assert_eq!(r["attempts"], 2, "and the attempts");
    assert!(r["next_attempt_at"].as_i64().unwrap() <= ferrymail::spool::now_unix());

    // Through the daemon: --all leaves held mail held.
    let daemon = env.start_daemon();
    assert!(env.run(&["queue", "retry", "--all"], b"").status.success());
    let held = recipient(&ids[1]);
    assert_eq!(held["state"], "held");
    assert_eq!(
        held["next_attempt_at"].as_i64(),
        None,
        "held mail is due at no time"
    );
    daemon.stop();
}

/// With the daemon down, `queue delete --all` empties the maildrop too (nothing could
/// pick those up meanwhile), and says how many of them there were.
#[test]
fn delete_all_without_the_daemon_takes_the_maildrop_too() {
    let env = Env::new();
    let daemon = env.start_daemon();
    fill_maildrop(&env, 2);
    assert!(wait_for(Duration::from_secs(10), || env.queued().len() == 2));
    daemon.stop();
    fill_maildrop(&env, 3);
    assert_eq!(env.queue_json().len(), 5);
    let out = env.run(&["queue", "delete", "--all"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5 message(s) deleted"), "{text}");
    assert!(text.contains("3 of them not yet picked up"), "{text}");
    assert!(env.queue_json().is_empty());
    assert!(env.files_in("maildrop/new").is_empty());
}
