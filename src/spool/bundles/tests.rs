use super::*;
use crate::spool::envelope::{BundleOrigin, Origin};
use crate::spool::index::{self, Placement, Wait};

fn held(_: &str) -> Placement {
    Placement {
        route: "hub".into(),
        lane: "hub".into(),
        wait: Some(Wait::Held("held for the next bundle".into())),
    }
}

fn insert(conn: &Connection, recipients: &[&str], origin: Origin) -> QueueId {
    let id = QueueId::generate(std::time::SystemTime::now());
    let stored = crate::spool::claims::tests::stored(id, recipients, origin);
    index::insert_message(conn, &stored, 1000, Some(&held), &|_, _| None).unwrap();
    id
}

fn states(conn: &Connection, id: QueueId) -> Vec<String> {
    conn.prepare("SELECT state FROM recipient WHERE message_id = ?1 ORDER BY position")
        .unwrap()
        .query_map([id.as_str()], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn an_export_claims_held_mail_and_a_receipt_finds_it_bundled() {
    let dir = tempfile::tempdir().unwrap();
    let conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let a = insert(&conn, &["b@y.example", "c@y.example"], Origin::default());
    let b = insert(&conn, &["d@y.example"], Origin::default());

    let claims = claim_route(&conn, "hub", 2000, 1).unwrap();
    assert_eq!(claims.len(), 2, "one message, both its recipients");
    assert_eq!(states(&conn, a), ["in_flight", "in_flight"]);
    assert_eq!(states(&conn, b), ["held"], "beyond the limit: untouched");

    let marked = mark_bundled(&conn, &[(a, 0), (a, 1)], "B1", 5000, 2000).unwrap();
    assert_eq!(marked, 2);
    assert_eq!(states(&conn, a), ["bundled", "bundled"]);
    assert!(
        claim_route(&conn, "hub", 2001, 10)
            .unwrap()
            .iter()
            .all(|c| c.message_id == b)
    );
    assert_eq!(next_bundle_due(&conn).unwrap(), Some(5000));

    let named = claim_named(&conn, &[(a, 1), (b, 0)], 2002).unwrap();
    assert_eq!(named.len(), 1, "b is in flight: a receipt leaves it alone");
    assert_eq!(named[0].position, 1);
}

#[test]
fn bundled_mail_without_a_receipt_goes_back_to_the_queue_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let a = insert(&conn, &["b@y.example"], Origin::default());
    claim_route(&conn, "hub", 2000, 10).unwrap();
    mark_bundled(&conn, &[(a, 0)], "B1", 5000, 2000).unwrap();
    assert!(release_bundled(&conn, 4999, 10).unwrap().is_empty());
    assert_eq!(release_bundled(&conn, 5000, 10).unwrap(), ["hub"]);
    assert_eq!(states(&conn, a), ["deferred"]);
    let reply: String = conn
        .query_row(
            "SELECT last_reply FROM recipient WHERE message_id = ?1",
            [a.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reply.contains("B1"), "{reply}");
}

#[test]
fn imported_messages_are_remembered_by_node_message_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let conn = index::open_writer(&dir.path().join("i.sqlite3")).unwrap();
    let origin = Origin {
        kind: crate::spool::OriginKind::Bundle,
        bundle: Some(BundleOrigin {
            node: "station".into(),
            bundle: "B1".into(),
            message: "0000000000000001".into(),
            positions: vec![0, 2],
        }),
        ..Origin::default()
    };
    insert(&conn, &["b@y.example", "c@y.example"], origin);
    assert_eq!(
        imported_positions(&conn, "station", "0000000000000001").unwrap(),
        [0, 2]
    );
    assert!(
        imported_positions(&conn, "other", "0000000000000001")
            .unwrap()
            .is_empty()
    );
    assert_eq!(prune_imported(&conn, 999).unwrap(), 0);
    assert_eq!(prune_imported(&conn, 1001).unwrap(), 2);
}

#[test]
fn a_version_4_index_takes_the_bundled_state_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.sqlite3");
    let a = {
        let conn = index::open_writer(&path).unwrap();
        insert(&conn, &["b@y.example"], Origin::default())
    };
    {
        // Back to what version 4 had: no bundle columns, no `bundled` in the CHECK.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE r4 AS SELECT message_id, position, address, domain, state, attempts,
                 next_attempt_at, online_age, last_reply, last_host, updated_at, route,
                 online_mark, link_wait, warned, lane FROM recipient;
             DROP TABLE recipient; ALTER TABLE r4 RENAME TO recipient; DROP TABLE imported;
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let conn = index::open_writer(&path).unwrap();
    assert_eq!(states(&conn, a), ["held"]);
    claim_route(&conn, "hub", 2000, 10).unwrap();
    assert_eq!(mark_bundled(&conn, &[(a, 0)], "B1", 5000, 2000).unwrap(), 1);
    assert_eq!(states(&conn, a), ["bundled"]);
}
