use super::*;
use crate::spool::envelope::{Envelope, Origin, Recipient, StoredMessage, Trailer};
use crate::spool::index;

fn setup() -> (tempfile::TempDir, Connection, QueueId) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let id = QueueId::generate(std::time::SystemTime::now());
    let stored = StoredMessage {
        envelope: Envelope {
            id,
            received_at: 1000,
            ..Envelope::new(
                "a@x.example",
                vec![Recipient::new("b@y.example"), Recipient::new("c@z.example")],
                Origin::default(),
            )
        },
        body_offset: 0,
        trailer: Trailer {
            size: 10,
            eight_bit: false,
        },
    };
    let tx = conn.transaction().unwrap();
    index::insert_message(&tx, &stored, 1000, &|_, _| None).unwrap();
    tx.commit().unwrap();
    (dir, conn, id)
}

fn deliver(_: &str) -> Disposition {
    Disposition::Deliver {
        route: "upstream".into(),
    }
}

fn claim(conn: &mut Connection, now: i64, lease: i64, decide: &mut Decide) -> Vec<Claim> {
    let tx = conn.transaction().unwrap();
    let claims = claim_due(&tx, now, lease, 10, decide).unwrap();
    tx.commit().unwrap();
    claims
}

fn state(
    conn: &Connection,
    id: QueueId,
    position: usize,
) -> (String, i64, Option<i64>, Option<String>) {
    conn.query_row(
        "SELECT state, attempts, next_attempt_at, last_reply FROM recipient WHERE message_id = ?1 AND position = ?2",
        params![id.as_str(), position as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

fn deferred(reply: &str, next: i64, attempt: bool, link_wait: bool) -> Recorded {
    Recorded::Deferred {
        reply: reply.into(),
        host: None,
        next_attempt_at: next,
        attempt,
        link_wait,
        warned: false,
    }
}

#[test]
fn claim_lease_record() {
    let (_dir, mut conn, id) = setup();
    assert_eq!(next_due(&conn).unwrap(), Some(1000));
    assert!(
        claim(&mut conn, 999, 600, &mut deliver).is_empty(),
        "nothing due yet"
    );
    let claims = claim(&mut conn, 1000, 600, &mut deliver);
    assert_eq!(claims.len(), 2);
    assert_eq!(
        (claims[0].domain.as_str(), claims[1].position),
        ("y.example", 1)
    );
    assert!(
        claim(&mut conn, 1000, 600, &mut deliver).is_empty(),
        "claimed ones are not claimed twice"
    );
    assert_eq!(state(&conn, id, 0).0, "in_flight");

    let tx = conn.transaction().unwrap();
    let delivered = Recorded::Delivered {
        reply: "250 2.0.0 ok".into(),
        host: "mx.y.example".into(),
    };
    record(&tx, id, 0, &delivered, 1010).unwrap();
    record(
        &tx,
        id,
        1,
        &deferred("connecting: timed out", 1010, false, false),
        1010,
    )
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        state(&conn, id, 0),
        ("delivered".into(), 1, None, Some("250 2.0.0 ok".into()))
    );
    assert_eq!(state(&conn, id, 1).0, "deferred");
    assert_eq!(
        state(&conn, id, 1).1,
        0,
        "our link being down is not an attempt"
    );

    assert_eq!(claim(&mut conn, 1010, 600, &mut deliver).len(), 1);
    record_one(
        &mut conn,
        id,
        1,
        &deferred("451 4.7.1 later", 1310, true, false),
        1011,
    );
    assert_eq!(
        state(&conn, id, 1),
        (
            "deferred".into(),
            1,
            Some(1310),
            Some("451 4.7.1 later".into())
        )
    );
    assert_eq!(next_due(&conn).unwrap(), Some(1310));
    assert!(
        !index::is_finished(&conn, id).unwrap(),
        "one recipient still deferred"
    );
    let tx = conn.transaction().unwrap();
    let bounced = Recorded::Bounced {
        reply: "550 5.1.1 no".into(),
        host: None,
    };
    record(&tx, id, 1, &bounced, 1400).unwrap();
    tx.commit().unwrap();
    assert!(
        index::is_finished(&conn, id).unwrap(),
        "delivered and bounced: done"
    );
    let unknown = QueueId::generate(std::time::SystemTime::now());
    assert!(
        !index::is_finished(&conn, unknown).unwrap(),
        "not indexed is not finished"
    );
}

#[test]
fn routes_settle_what_is_not_delivered_in_the_same_transaction() {
    let (_dir, mut conn, id) = setup();
    let mut decide = |domain: &str| match domain {
        "y.example" => Disposition::Hold {
            route: "route[0]".into(),
            reply: "held".into(),
        },
        _ => Disposition::Wait {
            route: "upstream".into(),
            reply: "waiting for the link".into(),
            until: 4600,
        },
    };
    assert!(claim(&mut conn, 1000, 600, &mut decide).is_empty());
    assert_eq!(
        state(&conn, id, 0),
        ("held".into(), 0, Some(1000), Some("held".into()))
    );
    assert_eq!(
        state(&conn, id, 1),
        (
            "queued".into(),
            0,
            Some(4600),
            Some("waiting for the link".into())
        ),
        "a wait keeps the state"
    );
    assert_eq!(
        next_due(&conn).unwrap(),
        Some(4600),
        "held recipients are not due"
    );
    assert_eq!(
        index::release_link_wait(&conn, Some("route[0]"), 2000).unwrap(),
        0
    );
    assert_eq!(
        index::release_link_wait(&conn, Some("upstream"), 2000).unwrap(),
        1
    );
    assert_eq!(
        state(&conn, id, 1).2,
        Some(2000),
        "the gate opened: due now"
    );
    assert_eq!(
        index::release_link_wait(&conn, Some("upstream"), 2001).unwrap(),
        0,
        "released once"
    );
}

#[test]
fn a_skipped_domain_is_left_alone() {
    let (_dir, mut conn, id) = setup();
    let mut decide = |domain: &str| match domain {
        "y.example" => Disposition::Skip,
        _ => deliver(domain),
    };
    let claims = claim(&mut conn, 1000, 600, &mut decide);
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].domain, "z.example");
    assert_eq!(state(&conn, id, 0), ("queued".into(), 0, Some(1000), None));
}

#[test]
fn an_expired_lease_is_claimed_again() {
    let (_dir, mut conn, _id) = setup();
    assert_eq!(claim(&mut conn, 1000, 60, &mut deliver).len(), 2);
    assert!(claim(&mut conn, 1059, 60, &mut deliver).is_empty());
    assert_eq!(
        claim(&mut conn, 1060, 60, &mut deliver).len(),
        2,
        "the dead delivery's lease ran out"
    );
}

/// Records one outcome in a transaction of its own.
fn record_one(conn: &mut Connection, id: QueueId, position: usize, outcome: &Recorded, now: i64) {
    let tx = conn.transaction().unwrap();
    record(&tx, id, position, outcome, now).unwrap();
    tx.commit().unwrap();
}

/// Records every claim deferred by a destination, due at `next`.
fn defer_all(conn: &mut Connection, id: QueueId, claims: &[Claim], next: i64, now: i64) {
    let tx = conn.transaction().unwrap();
    for c in claims {
        record(
            &tx,
            id,
            c.position,
            &deferred("451", next, true, false),
            now,
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn online_age_follows_the_route_clock() {
    let (_dir, mut conn, id) = setup();
    advance_clock(&conn, "upstream", 500, 1000).unwrap();
    let claims = claim(&mut conn, 1000, 60, &mut deliver);
    assert_eq!(
        claims[0].online_age, 0,
        "the clock before it was routed is not its age"
    );
    defer_all(&mut conn, id, &claims, 1100, 1001);
    advance_clock(&conn, "upstream", 40, 1050).unwrap();
    advance_clock(&conn, "other", 1000, 1050).unwrap();
    let claims = claim(&mut conn, 1100, 60, &mut deliver);
    assert_eq!(
        claims[0].online_age, 40,
        "aged by its own route's clock only"
    );

    // Moved to another route (the configuration changed): the age so far comes along.
    defer_all(&mut conn, id, &claims, 1200, 1101);
    let mut elsewhere = |_: &str| Disposition::Deliver {
        route: "other".into(),
    };
    advance_clock(&conn, "other", 7, 1150).unwrap();
    let claims = claim(&mut conn, 1200, 60, &mut elsewhere);
    assert_eq!(claims[0].online_age, 40);
    advance_clock(&conn, "other", 5, 1250).unwrap();
    let age: i64 = conn
        .query_row(
            &format!(
                "SELECT {ONLINE_AGE_SQL} FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
                 WHERE r.message_id = ?1 AND r.position = 0"
            ),
            [id.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(age, 45);
}

#[test]
fn a_finished_drop_is_remembered_after_its_rows_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let id = QueueId::generate(std::time::SystemTime::now());
    let stored = StoredMessage {
        envelope: Envelope {
            id,
            ..Envelope::new(
                "a@x.example",
                vec![Recipient::new("b@y.example")],
                Origin {
                    drop: Some("1800000000.1.P1.Rabc".into()),
                    ..Origin::default()
                },
            )
        },
        body_offset: 0,
        trailer: Trailer {
            size: 1,
            eight_bit: false,
        },
    };
    let tx = conn.transaction().unwrap();
    index::insert_message(&tx, &stored, 1000, &|_, _| None).unwrap();
    tx.commit().unwrap();
    assert!(index::has_drop(&conn, "1800000000.1.P1.Rabc").unwrap());
    let tx = conn.transaction().unwrap();
    index::delete_message(&tx, id.as_str()).unwrap();
    tx.commit().unwrap();
    assert!(
        index::has_drop(&conn, "1800000000.1.P1.Rabc").unwrap(),
        "delivered and removed, but a leftover drop must not be queued again"
    );
    let tx = conn.transaction().unwrap();
    let later = crate::spool::now_unix() + index::FINISHED_DROP_KEPT + 10;
    index::prune_finished_drops(&tx, later).unwrap();
    tx.commit().unwrap();
    assert!(!index::has_drop(&conn, "1800000000.1.P1.Rabc").unwrap());
}
