//! The queue owner's writes to per-recipient state: claiming due recipients for delivery
//! and recording what became of them. A claim marks a recipient `in_flight` and sets its
//! `next_attempt_at` to the end of the lease: if the delivery holding it dies, the lease
//! runs out and the recipient is due again (restart resets every claim at once). Only
//! attempts that reached a destination count and grow the backoff (DESIGN §1.4).

use rusqlite::{Connection, Transaction, params};

use super::id::QueueId;
use super::state::RecipientState;

/// A recipient handed to delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub message_id: QueueId,
    pub position: usize,
    pub address: String,
    pub domain: String,
    pub attempts: i64,
    pub online_age: i64,
}

/// What became of a claimed recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    Delivered {
        reply: String,
        host: String,
    },
    /// `attempt`: the destination answered (counts and ages); false for our own link
    /// being down, which leaves the attempts as they were.
    Deferred {
        reply: String,
        host: Option<String>,
        next_attempt_at: i64,
        attempt: bool,
    },
    Bounced {
        reply: String,
        host: Option<String>,
    },
    Expired {
        reply: String,
    },
}

/// What the queue owner does with a due recipient, decided by its domain's route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Claim it for delivery.
    Deliver,
    /// A hold route: `held` until a flush or ETRN names the domain.
    Hold { reply: String },
    /// Cannot be delivered by this ferrymail now: stays `queued`, due again `after`
    /// seconds later, with the reason shown.
    Postpone { reply: String, after: i64 },
}

/// The routing decision the claim applies, by recipient domain.
pub type Decide = dyn Fn(&str) -> Disposition + Send + Sync;

/// Claims up to `limit` due recipients, oldest due first: `queued` or `deferred` ones due
/// by `now`, and `in_flight` ones whose lease has run out. `decide` routes each by its
/// domain; only those to deliver are claimed, the rest are settled in the same
/// transaction, so no recipient is ever seen `in_flight` without a delivery behind it.
pub fn claim_due(
    tx: &Transaction<'_>,
    now: i64,
    lease_secs: i64,
    limit: usize,
    decide: &Decide,
) -> rusqlite::Result<Vec<Claim>> {
    let mut select = tx.prepare_cached(
        "SELECT message_id, position, address, domain, attempts, online_age FROM recipient
         WHERE state IN ('queued', 'deferred', 'in_flight') AND next_attempt_at <= ?1
         ORDER BY next_attempt_at, message_id, position LIMIT ?2",
    )?;
    let rows = select.query_map(params![now, limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut claims = Vec::new();
    let mut settled = Vec::new();
    for row in rows {
        let (id, position, address, domain, attempts, online_age) = row?;
        let Ok(message_id) = QueueId::parse(&id) else {
            continue;
        };
        match decide(&domain) {
            Disposition::Deliver => claims.push(Claim {
                message_id,
                position: position as usize,
                address,
                domain,
                attempts,
                online_age,
            }),
            Disposition::Hold { reply } => {
                settled.push((id, position, RecipientState::Held, reply, now))
            }
            Disposition::Postpone { reply, after } => {
                settled.push((id, position, RecipientState::Queued, reply, now + after))
            }
        }
    }
    drop(select);
    let mut settle = tx.prepare_cached(
        "UPDATE recipient SET state = ?1, last_reply = ?2, next_attempt_at = ?3, updated_at = ?4
         WHERE message_id = ?5 AND position = ?6",
    )?;
    for (id, position, state, reply, next) in &settled {
        settle.execute(params![state.as_str(), reply, next, now, id, position])?;
    }
    drop(settle);
    let mut lease = tx.prepare_cached(
        "UPDATE recipient SET state = 'in_flight', next_attempt_at = ?1, updated_at = ?2
         WHERE message_id = ?3 AND position = ?4",
    )?;
    for c in &claims {
        lease.execute(params![
            now + lease_secs,
            now,
            c.message_id.as_str(),
            c.position as i64
        ])?;
    }
    Ok(claims)
}

/// Records the outcome of a claimed recipient.
pub fn record(
    tx: &Transaction<'_>,
    id: QueueId,
    position: usize,
    outcome: &Recorded,
    now: i64,
) -> rusqlite::Result<()> {
    let (state, reply, host, next, attempt) = match outcome {
        Recorded::Delivered { reply, host } => (
            RecipientState::Delivered,
            reply,
            Some(host.as_str()),
            None,
            true,
        ),
        Recorded::Deferred {
            reply,
            host,
            next_attempt_at,
            attempt,
        } => (
            RecipientState::Deferred,
            reply,
            host.as_deref(),
            Some(*next_attempt_at),
            *attempt,
        ),
        Recorded::Bounced { reply, host } => {
            (RecipientState::Bounced, reply, host.as_deref(), None, true)
        }
        Recorded::Expired { reply } => (RecipientState::Expired, reply, None, None, false),
    };
    tx.prepare_cached(
        "UPDATE recipient SET state = ?1, last_reply = ?2, last_host = COALESCE(?3, last_host),
             next_attempt_at = ?4, attempts = attempts + ?5, updated_at = ?6
         WHERE message_id = ?7 AND position = ?8",
    )?
    .execute(params![
        state.as_str(),
        reply,
        host,
        next,
        i64::from(attempt),
        now,
        id.as_str(),
        position as i64
    ])?;
    Ok(())
}

/// When the next recipient falls due (waiting ones and leases), for the wake loop.
pub fn next_due(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT MIN(next_attempt_at) FROM recipient WHERE state IN ('queued', 'deferred', 'in_flight')",
        [],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
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
        Disposition::Deliver
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

    #[test]
    fn claim_lease_record() {
        let (_dir, mut conn, id) = setup();
        assert_eq!(next_due(&conn).unwrap(), Some(1000));
        let tx = conn.transaction().unwrap();
        assert!(
            claim_due(&tx, 999, 600, 10, &deliver).unwrap().is_empty(),
            "nothing due yet"
        );
        let claims = claim_due(&tx, 1000, 600, 10, &deliver).unwrap();
        assert_eq!(claims.len(), 2);
        assert_eq!(
            (claims[0].domain.as_str(), claims[1].position),
            ("y.example", 1)
        );
        assert!(
            claim_due(&tx, 1000, 600, 10, &deliver).unwrap().is_empty(),
            "claimed ones are not claimed twice"
        );
        tx.commit().unwrap();
        assert_eq!(state(&conn, id, 0).0, "in_flight");

        let tx = conn.transaction().unwrap();
        let delivered = Recorded::Delivered {
            reply: "250 2.0.0 ok".into(),
            host: "mx.y.example".into(),
        };
        record(&tx, id, 0, &delivered, 1010).unwrap();
        let link_down = Recorded::Deferred {
            reply: "connecting: timed out".into(),
            host: None,
            next_attempt_at: 1010,
            attempt: false,
        };
        record(&tx, id, 1, &link_down, 1010).unwrap();
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

        let tx = conn.transaction().unwrap();
        let again = claim_due(&tx, 1010, 600, 10, &deliver).unwrap();
        assert_eq!(again.len(), 1);
        let answered = Recorded::Deferred {
            reply: "451 4.7.1 later".into(),
            host: Some("mx.z.example".into()),
            next_attempt_at: 1310,
            attempt: true,
        };
        record(&tx, id, 1, &answered, 1011).unwrap();
        tx.commit().unwrap();
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
        let decide = |domain: &str| match domain {
            "y.example" => Disposition::Hold {
                reply: "held".into(),
            },
            _ => Disposition::Postpone {
                reply: "no MX delivery".into(),
                after: 3600,
            },
        };
        let tx = conn.transaction().unwrap();
        assert!(claim_due(&tx, 1000, 600, 10, &decide).unwrap().is_empty());
        tx.commit().unwrap();
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
                Some("no MX delivery".into())
            )
        );
        assert_eq!(
            next_due(&conn).unwrap(),
            Some(4600),
            "held recipients are not due"
        );
    }

    #[test]
    fn an_expired_lease_is_claimed_again() {
        let (_dir, mut conn, _id) = setup();
        let tx = conn.transaction().unwrap();
        assert_eq!(claim_due(&tx, 1000, 60, 10, &deliver).unwrap().len(), 2);
        assert!(claim_due(&tx, 1059, 60, 10, &deliver).unwrap().is_empty());
        assert_eq!(
            claim_due(&tx, 1060, 60, 10, &deliver).unwrap().len(),
            2,
            "the dead delivery's lease ran out"
        );
        tx.commit().unwrap();
    }
}
