use super::*;
use crate::spool::claims;
use crate::spool::envelope::{Envelope, Origin, Recipient, StoredMessage, Trailer};
use crate::spool::index::{self, Placement};

/// An index with `n` messages, message i to u@d{i % 3}.example, each domain on its own
/// lane under route `mx`, due at 1000.
fn setup(n: usize) -> (tempfile::TempDir, Connection, Vec<QueueId>) {
    let dir = tempfile::tempdir().unwrap();
    let conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let place = |domain: &str| Placement {
        route: "mx".into(),
        lane: format!("mx {domain}"),
        wait: None,
    };
    let mut ids = Vec::new();
    for i in 0..n {
        let id = QueueId::generate(std::time::SystemTime::now());
        let stored = StoredMessage {
            envelope: Envelope {
                id,
                ..Envelope::new(
                    crate::smtp::ReversePath::parse("a@x.example").unwrap(),
                    vec![Recipient::parse(&format!("u@d{}.example", i % 3)).unwrap()],
                    Origin::default(),
                )
            },
            body_offset: 0,
            trailer: Trailer {
                size: 1,
                eight_bit: false,
                checksum: None,
                prepended: false,
            },
            prepend: Vec::new(),
        };
        index::insert_message(&conn, &stored, 1000, Some(&place), &|_, _| None).unwrap();
        ids.push(id);
    }
    (dir, conn, ids)
}

fn count(conn: &Connection, condition: &str) -> i64 {
    conn.query_row(
        &format!("SELECT COUNT(*) FROM recipient WHERE {condition}"),
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Runs a step until it reports nothing more; returns the steps taken and the total.
fn until_done(mut step: impl FnMut() -> Batch) -> (usize, usize) {
    let (mut steps, mut total) = (0, 0);
    loop {
        let b = step();
        steps += 1;
        total += b.changed;
        if !b.more {
            return (steps, total);
        }
        assert!(steps < 100, "a change that never ends");
    }
}

#[test]
fn operator_changes_go_in_bounded_steps_over_any_scope() {
    let (_dir, conn, ids) = setup(25);
    let (steps, held) = until_done(|| apply(&conn, Action::Hold, &Scope::All, 1000, 10).unwrap());
    assert_eq!((held, steps), (25, 3), "25 in steps of 10");
    assert_eq!(
        count(&conn, "state = 'held' AND next_attempt_at IS NULL"),
        25
    );
    let b = apply(
        &conn,
        Action::Release,
        &Scope::Domain("d1.example".into()),
        1100,
        100,
    )
    .unwrap();
    assert_eq!(b.changed, 8);
    assert_eq!(
        b.lanes,
        ["mx d1.example"],
        "the lanes whose mail is due now"
    );
    assert_eq!(
        count(&conn, "state = 'queued' AND next_attempt_at = 1100"),
        8
    );
    let b = apply(
        &conn,
        Action::Release,
        &Scope::Ids(vec![ids[0], ids[3]]),
        1200,
        100,
    )
    .unwrap();
    assert_eq!(b.messages.len(), 2);
    let (_, released) =
        until_done(|| apply(&conn, Action::Release, &Scope::Route("mx".into()), 1300, 4).unwrap());
    assert_eq!(released, 25 - 8 - 2);
    assert_eq!(count(&conn, "state = 'held'"), 0);
    // Retry brings forward only what waits for a later time.
    conn.execute(
        "UPDATE recipient SET state = 'deferred', next_attempt_at = 5000 WHERE rowid <= 5",
        [],
    )
    .unwrap();
    let (_, retried) = until_done(|| apply(&conn, Action::Retry, &Scope::All, 1400, 2).unwrap());
    assert_eq!(retried, 5);
    assert_eq!(count(&conn, "next_attempt_at > 1400"), 0);
}

#[test]
fn deleting_takes_messages_in_bounded_steps() {
    let (_dir, conn, ids) = setup(7);
    assert_eq!(messages_in(&conn, &Scope::All, 5).unwrap().len(), 5);
    assert_eq!(
        messages_in(&conn, &Scope::Domain("d0.example".into()), 10)
            .unwrap()
            .len(),
        3
    );
    let named = messages_in(&conn, &Scope::Ids(vec![ids[6], ids[1]]), 10).unwrap();
    assert_eq!(named.len(), 2);
    assert_eq!(
        messages_in(&conn, &Scope::Route("elsewhere".into()), 10)
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn link_waits_are_set_and_released_per_route_and_domain() {
    let (_dir, conn, _) = setup(6);
    let b = wait_for_link(&conn, "mx d0.example", None, "manual mode", 1000, 100).unwrap();
    assert_eq!(b.changed, 2);
    wait_for_link(&conn, "mx d1.example", None, "manual mode", 1000, 100).unwrap();
    assert_eq!(count(&conn, "link_wait = 1 AND next_attempt_at IS NULL"), 4);
    assert_eq!(
        claims::lane_next_due(&conn, "mx d0.example").unwrap(),
        None,
        "waiting for the link is waiting for no time"
    );
    let b = release_link_wait(&conn, "mx", Some("d1.example"), 2000, 100).unwrap();
    assert_eq!(
        (b.changed, b.lanes.as_slice()),
        (2, ["mx d1.example".to_owned()].as_slice())
    );
    let b = release_link_wait(&conn, "mx", None, 2000, 100).unwrap();
    assert_eq!(b.changed, 2);
    assert_eq!(count(&conn, "link_wait = 1"), 0);
    let b = hold_due(&conn, "mx d2.example", "d2.example", "held", 2000, 100).unwrap();
    assert_eq!(b.changed, 2);
    assert_eq!(count(&conn, "state = 'held' AND last_reply = 'held'"), 2);
}

#[test]
fn a_clamp_brings_far_retries_back() {
    let (_dir, conn, _) = setup(4);
    conn.execute(
        "UPDATE recipient SET next_attempt_at = 99999 WHERE rowid <= 3",
        [],
    )
    .unwrap();
    let (_, clamped) = until_done(|| clamp_due(&conn, 5000, 2).unwrap());
    assert_eq!(clamped, 3);
    assert_eq!(count(&conn, "next_attempt_at = 5000"), 3);
}

#[test]
fn placement_moves_pending_mail_to_its_lane_once() {
    let (_dir, conn, _) = setup(6);
    let to = Placement {
        route: "upstream".into(),
        lane: "upstream".into(),
        wait: None,
    };
    assert_eq!(place(&conn, "d0.example", &to, 100).unwrap().changed, 2);
    assert_eq!(
        place(&conn, "d0.example", &to, 100).unwrap().changed,
        0,
        "once"
    );
    let placed = placed_domains(&conn).unwrap();
    assert!(placed.contains(&("d0.example".into(), Some("upstream".into()))));
    assert!(placed.contains(&("d1.example".into(), Some("mx d1.example".into()))));
}

#[test]
fn each_step_walks_an_index() {
    let (_dir, conn, _) = setup(3);
    let plan = |sql: &str| claims::tests::plan(&conn, sql);
    for (what, sql) in [
        (
            "retry",
            "SELECT rowid FROM recipient WHERE 1 AND next_attempt_at > 5 LIMIT 10",
        ),
        (
            "release",
            "SELECT rowid FROM recipient WHERE 1 AND state = 'held' LIMIT 10",
        ),
        (
            "hold",
            "SELECT rowid FROM recipient WHERE next_attempt_at IS NOT NULL LIMIT 10",
        ),
        (
            "link",
            "SELECT rowid FROM recipient WHERE link_wait = 1 AND route = 'mx' LIMIT 10",
        ),
        (
            "domain",
            "SELECT rowid FROM recipient WHERE domain = 'd' AND state = 'held' LIMIT 10",
        ),
        (
            "route",
            "SELECT rowid FROM recipient WHERE (lane = 'mx' OR (lane > 'mx ' AND lane < 'mx!')) AND state = 'held' LIMIT 10",
        ),
        (
            "due",
            "SELECT rowid FROM recipient WHERE lane = 'x' AND next_attempt_at <= 5 LIMIT 10",
        ),
        (
            "clamp",
            "SELECT rowid FROM recipient WHERE next_attempt_at > 5 LIMIT 10",
        ),
    ] {
        let p = plan(sql);
        assert!(
            p.contains("USING INDEX") || p.contains("USING COVERING INDEX"),
            "{what}: {p}"
        );
    }
}
