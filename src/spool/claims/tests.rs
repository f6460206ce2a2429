use super::*;
use crate::spool::envelope::{About, Envelope, Origin, Recipient, StoredMessage, Trailer};
use crate::spool::index::{self, Placement, Wait};

/// An index with one message to b@y.example and c@z.example, committed at 1000, each
/// domain on its own lane (`mx y.example`, `upstream`).
fn setup() -> (tempfile::TempDir, Connection, QueueId) {
    let dir = tempfile::tempdir().unwrap();
    let conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let id = insert(&conn, &["b@y.example", "c@z.example"], 1000, &place);
    (dir, conn, id)
}

fn place(domain: &str) -> Placement {
    match domain {
        "y.example" => Placement {
            route: "mx".into(),
            lane: "mx y.example".into(),
            wait: None,
        },
        _ => Placement {
            route: "upstream".into(),
            lane: "upstream".into(),
            wait: None,
        },
    }
}

pub(crate) fn stored(id: QueueId, recipients: &[&str], origin: Origin) -> StoredMessage {
    StoredMessage {
        envelope: Envelope {
            id,
            received_at: 1000,
            ..Envelope::new(
                crate::smtp::ReversePath::parse("a@x.example").unwrap(),
                recipients
                    .iter()
                    .map(|r| Recipient::parse(r).unwrap())
                    .collect(),
                origin,
            )
        },
        body_offset: 0,
        trailer: Trailer {
            size: 10,
            eight_bit: false,
            checksum: None,
            prepended: false,
        },
        prepend: Vec::new(),
    }
}

fn insert(conn: &Connection, recipients: &[&str], now: i64, place: &index::Place) -> QueueId {
    let id = QueueId::generate(std::time::SystemTime::now());
    index::insert_message(
        conn,
        &stored(id, recipients, Origin::default()),
        now,
        Some(place),
        &|_, _| None,
    )
    .unwrap();
    id
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

fn deferred(reply: &str, next: Option<i64>, attempt: bool) -> Verdict {
    Verdict::Deferred {
        reply: reply.into(),
        host: None,
        next_attempt_at: next,
        attempt,
        warned: false,
    }
}

#[test]
fn a_lane_claims_its_own_due_mail_and_records_each_outcome() {
    let (_dir, conn, id) = setup();
    assert_eq!(
        due_lanes(&conn).unwrap(),
        [
            ("mx y.example".to_owned(), 1000),
            ("upstream".to_owned(), 1000)
        ]
    );
    assert!(
        claim(&conn, "upstream", None, 999, 10).unwrap().is_empty(),
        "nothing due yet"
    );
    let claims = claim(&conn, "upstream", None, 1000, 10).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(
        (
            claims[0].domain.as_str(),
            claims[0].position,
            claims[0].route.as_str()
        ),
        ("z.example", 1, "upstream"),
        "a claim carries its route"
    );
    assert!(
        claim(&conn, "upstream", None, 1000, 10).unwrap().is_empty(),
        "claimed once"
    );
    assert_eq!(state(&conn, id, 1).0, "in_flight");
    assert_eq!(
        lane_next_due(&conn, "upstream").unwrap(),
        None,
        "in flight is due at no time"
    );

    let delivered = Verdict::Delivered {
        reply: "250 2.0.0 ok".into(),
        host: "hub".into(),
    };
    assert!(record(&conn, id, 1, &delivered, 1010).unwrap());
    assert!(
        !record(&conn, id, 1, &delivered, 1011).unwrap(),
        "recorded once"
    );
    assert_eq!(
        state(&conn, id, 1),
        ("delivered".into(), 1, None, Some("250 2.0.0 ok".into()))
    );

    let claims = claim(&conn, "mx y.example", None, 1010, 10).unwrap();
    record(
        &conn,
        id,
        claims[0].position,
        &deferred("connecting: timed out", None, false),
        1010,
    )
    .unwrap();
    assert_eq!(
        state(&conn, id, 0),
        (
            "deferred".into(),
            0,
            None,
            Some("connecting: timed out".into())
        ),
        "our link being down is not an attempt, and waits for the gate"
    );
    let link_wait: bool = conn
        .query_row(
            "SELECT link_wait FROM recipient WHERE position = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(link_wait);
    assert!(!index::is_finished(&conn, id).unwrap());
    crate::spool::sets::release_link_wait(&conn, "mx", None, 1020, 100).unwrap();
    let claims = claim(&conn, "mx y.example", None, 1020, 10).unwrap();
    record(
        &conn,
        id,
        claims[0].position,
        &deferred("451 later", Some(1310), true),
        1021,
    )
    .unwrap();
    assert_eq!(
        state(&conn, id, 0),
        ("deferred".into(), 1, Some(1310), Some("451 later".into()))
    );
    assert_eq!(lane_next_due(&conn, "mx y.example").unwrap(), Some(1310));
    let claims = claim(&conn, "mx y.example", None, 1310, 10).unwrap();
    let bounced = Verdict::Bounced {
        reply: "550 5.1.1 no".into(),
        host: None,
    };
    record(&conn, id, claims[0].position, &bounced, 1400).unwrap();
    assert!(
        index::is_finished(&conn, id).unwrap(),
        "delivered and bounced: done"
    );
    let unknown = QueueId::generate(std::time::SystemTime::now());
    assert!(!index::is_finished(&conn, unknown).unwrap());
}

#[test]
fn placement_decides_what_waits_when_mail_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let waits = |domain: &str| Placement {
        route: "r".into(),
        lane: "r".into(),
        wait: match domain {
            "held.example" => Some(Wait::Held("held until a flush".into())),
            "wait.example" => Some(Wait::Link("manual mode".into())),
            _ => None,
        },
    };
    let id = insert(
        &conn,
        &["a@held.example", "b@wait.example", "c@go.example"],
        1000,
        &waits,
    );
    assert_eq!(
        state(&conn, id, 0),
        ("held".into(), 0, None, Some("held until a flush".into()))
    );
    assert_eq!(
        state(&conn, id, 1),
        ("queued".into(), 0, None, Some("manual mode".into()))
    );
    assert_eq!(state(&conn, id, 2), ("queued".into(), 0, Some(1000), None));
    // Without placement (the offline CLI, recovery) mail is on no lane until placed.
    let loose = QueueId::generate(std::time::SystemTime::now());
    let lanes = index::insert_message(
        &conn,
        &stored(loose, &["d@go.example"], Origin::default()),
        1000,
        None,
        &|_, _| None,
    )
    .unwrap();
    assert!(lanes.is_empty());
    assert_eq!(due_lanes(&conn).unwrap(), [("r".to_owned(), 1000)]);
}

#[test]
fn a_claim_never_splits_a_message_and_a_dead_delivery_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let one = |_: &str| Placement {
        route: "upstream".into(),
        lane: "upstream".into(),
        wait: None,
    };
    let first = insert(&conn, &["a@x.example"], 1000, &one);
    let second = insert(
        &conn,
        &["a@y.example", "b@y.example", "c@z.example"],
        1000,
        &one,
    );
    let claims = claim(&conn, "upstream", None, 1000, 2).unwrap();
    assert_eq!(
        claims.len(),
        4,
        "the limit reached inside a message takes the rest of it"
    );
    assert_eq!(claims[0].message_id, first);
    assert!(claims[1..].iter().all(|c| c.message_id == second));
    assert_eq!(release_claims(&conn, "upstream", 1005).unwrap(), 4);
    assert_eq!(
        state(&conn, second, 2),
        ("deferred".into(), 0, Some(1005), None)
    );
    let only_z = claim(&conn, "upstream", Some("z.example"), 1005, 10).unwrap();
    assert_eq!(only_z.len(), 1, "a claim for one domain");
    assert_eq!(due_domains(&conn, "upstream", 1005).unwrap().len(), 2);
}

#[test]
fn online_age_follows_the_route_clock() {
    let (_dir, conn, id) = setup();
    advance_clock(&conn, "upstream", 500, 1000).unwrap();
    let later = insert(&conn, &["d@z.example"], 1000, &place);
    let claims = claim(&conn, "upstream", None, 1000, 10).unwrap();
    let age_of = |m: QueueId| {
        claims
            .iter()
            .find(|c| c.message_id == m)
            .unwrap()
            .online_age
    };
    assert_eq!(
        age_of(id),
        500,
        "placed before the clock advanced: aged by it"
    );
    assert_eq!(
        age_of(later),
        0,
        "the clock before it was placed is not its age"
    );
    for c in &claims {
        record(
            &conn,
            c.message_id,
            c.position,
            &deferred("451", Some(1100), true),
            1001,
        )
        .unwrap();
    }
    advance_clock(&conn, "upstream", 40, 1050).unwrap();
    advance_clock(&conn, "other", 1000, 1050).unwrap();
    let claims = claim(&conn, "upstream", None, 1100, 10).unwrap();
    let age = claims
        .iter()
        .find(|c| c.message_id == later)
        .unwrap()
        .online_age;
    assert_eq!(age, 40, "aged by its own route's clock only");
    for c in &claims {
        record(
            &conn,
            c.message_id,
            c.position,
            &deferred("451", Some(1200), true),
            1101,
        )
        .unwrap();
    }
    // Moved to another route (the configuration changed): the age so far comes along.
    advance_clock(&conn, "other", 7, 1150).unwrap();
    let elsewhere = Placement {
        route: "other".into(),
        lane: "other".into(),
        wait: None,
    };
    crate::spool::sets::place(&conn, "z.example", &elsewhere, 100).unwrap();
    advance_clock(&conn, "other", 5, 1250).unwrap();
    let claims = claim(&conn, "other", None, 1250, 10).unwrap();
    let age = claims
        .iter()
        .find(|c| c.message_id == later)
        .unwrap()
        .online_age;
    assert_eq!(age, 45);
}

#[test]
fn a_notice_counts_as_reported_only_when_its_outcomes_are_recorded() {
    let (_dir, conn, id) = setup();
    let about = About {
        id,
        failed: vec![0],
        delayed: vec![1],
        relayed: vec![],
    };
    assert!(!reported(&conn, &about).unwrap());
    let claims = claim(&conn, "mx y.example", None, 1000, 10).unwrap();
    let bounced = Verdict::Bounced {
        reply: "550".into(),
        host: None,
    };
    record(&conn, id, claims[0].position, &bounced, 1001).unwrap();
    assert!(
        !reported(&conn, &about).unwrap(),
        "the delay is not recorded yet"
    );
    let claims = claim(&conn, "upstream", None, 1000, 10).unwrap();
    let warned = Verdict::Deferred {
        reply: "451".into(),
        host: None,
        next_attempt_at: Some(2000),
        attempt: true,
        warned: true,
    };
    record(&conn, id, claims[0].position, &warned, 1001).unwrap();
    assert!(reported(&conn, &about).unwrap());
    let gone = About {
        id: QueueId::generate(std::time::SystemTime::now()),
        failed: vec![0],
        delayed: vec![],
        relayed: vec![],
    };
    assert!(
        reported(&conn, &gone).unwrap(),
        "a message that left the spool was done"
    );
}

#[test]
fn a_damaged_message_fails_every_pending_recipient() {
    let (_dir, conn, id) = setup();
    claim(&conn, "upstream", None, 1000, 10).unwrap();
    assert_eq!(pending_positions(&conn, id).unwrap(), [0, 1]);
    let bounced = Verdict::Bounced {
        reply: "damaged".into(),
        host: None,
    };
    for p in [0, 1] {
        fail_pending(&conn, id, p, &bounced, 1001).unwrap();
    }
    assert!(index::is_finished(&conn, id).unwrap());
    assert!(pending_positions(&conn, id).unwrap().is_empty());
}

#[test]
fn a_finished_drop_is_remembered_after_its_rows_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let id = QueueId::generate(std::time::SystemTime::now());
    let origin = Origin {
        drop: Some("1800000000.1.P1.Rabc".into()),
        ..Origin::default()
    };
    index::insert_message(
        &conn,
        &stored(id, &["b@y.example"], origin),
        1000,
        None,
        &|_, _| None,
    )
    .unwrap();
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

/// The plan SQLite chooses for `sql`, as text.
pub(crate) fn plan(conn: &Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows.join("\n")
}

#[test]
fn claims_walk_an_index_never_the_whole_queue() {
    let (_dir, conn, _) = setup();
    let claim_plan = plan(
        &conn,
        &format!(
            "SELECT {CLAIM_COLUMNS}, {ONLINE_AGE_SQL}
             FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
             WHERE r.lane = 'upstream' AND r.next_attempt_at <= 5 AND (NULL IS NULL OR r.domain = NULL)
             ORDER BY r.next_attempt_at, r.rowid LIMIT 10"
        ),
    );
    assert!(claim_plan.contains("recipient_lane"), "{claim_plan}");
    assert!(
        !claim_plan.contains("TEMP B-TREE"),
        "no sort of all due mail: {claim_plan}"
    );
    let next_plan = plan(
        &conn,
        "SELECT MIN(next_attempt_at) FROM recipient WHERE lane = 'x' AND next_attempt_at IS NOT NULL",
    );
    assert!(next_plan.contains("recipient_lane"), "{next_plan}");
    let release = plan(
        &conn,
        "SELECT rowid FROM recipient WHERE lane = 'x' AND state = 'in_flight'",
    );
    assert!(release.contains("recipient_in_flight"), "{release}");
}
