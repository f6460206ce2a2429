//! The queue owner's writes for delivery: claiming one lane's due recipients, recording
//! what became of them, and the lane-level questions the owner's wake loop asks. A claim
//! marks a recipient `in_flight` until its outcome is recorded; the owner knows every
//! delivery it started, so one that dies has its claims released by lane, and a restart
//! releases them all. Only attempts that reached a destination count and grow the
//! backoff (README, "Intermittent links"). Every query here walks the `recipient_lane` index: its cost
//! follows the lane's due mail, never the size of the queue.

use rusqlite::{Connection, params};

use super::id::QueueId;
use super::index::ONLINE_AGE_SQL;
use super::state::RecipientState;

/// A recipient handed to delivery: it carries its route and lane, decided when it was
/// placed, so delivery never routes again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub message_id: QueueId,
    pub position: usize,
    pub address: String,
    pub domain: String,
    pub route: String,
    pub lane: String,
    pub attempts: i64,
    /// Seconds queued while its route's link was up, as of the claim.
    pub online_age: i64,
    /// Its delay notice has gone out.
    pub warned: bool,
}

/// What became of a claimed recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered {
        reply: String,
        host: String,
    },
    /// `next_attempt_at`: when it is due again; `None` waits for the route's gate to
    /// open (our own link was down). `attempt`: the destination answered (counts toward
    /// the backoff). `warned`: a delay notice went out.
    Deferred {
        reply: String,
        host: Option<String>,
        next_attempt_at: Option<i64>,
        attempt: bool,
        warned: bool,
    },
    Bounced {
        reply: String,
        host: Option<String>,
    },
    Expired {
        reply: String,
    },
}

impl Verdict {
    /// The state it leaves the recipient in.
    pub fn state(&self) -> RecipientState {
        match self {
            Verdict::Delivered { .. } => RecipientState::Delivered,
            Verdict::Deferred { .. } => RecipientState::Deferred,
            Verdict::Bounced { .. } => RecipientState::Bounced,
            Verdict::Expired { .. } => RecipientState::Expired,
        }
    }
}

pub(super) const CLAIM_COLUMNS: &str =
    "r.rowid, r.message_id, r.position, r.address, r.domain, r.route,
    r.lane, r.attempts, r.warned";

/// A row of `CLAIM_COLUMNS` followed by the online age, as its rowid and claim.
pub(super) fn claim_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Claim)> {
    Ok((
        r.get::<_, i64>(0)?,
        Claim {
            message_id: QueueId::parse(&r.get::<_, String>(1)?)
                .map_err(|_| rusqlite::Error::InvalidQuery)?,
            position: r.get::<_, i64>(2)? as usize,
            address: r.get(3)?,
            domain: r.get(4)?,
            route: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
            lane: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
            attempts: r.get(7)?,
            warned: r.get(8)?,
            online_age: r.get(9)?,
        },
    ))
}

/// Claims up to `limit` due recipients of `lane` (of `domain` only, when given), oldest
/// due first; the last message's other due recipients on the lane come along, so a
/// message is never split between two claims.
pub(crate) fn claim(
    tx: &Connection,
    lane: &str,
    domain: Option<&str>,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Claim>> {
    let mut rows = Vec::new();
    let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, Option<Claim>)> {
        let rowid = r.get(0)?;
        let Ok(message_id) = QueueId::parse(&r.get::<_, String>(1)?) else {
            return Ok((rowid, None));
        };
        let claim = Claim {
            message_id,
            position: r.get::<_, i64>(2)? as usize,
            address: r.get(3)?,
            domain: r.get(4)?,
            route: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
            lane: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
            attempts: r.get(7)?,
            warned: r.get(8)?,
            online_age: r.get(9)?,
        };
        Ok((rowid, Some(claim)))
    };
    let mut due = tx.prepare_cached(&format!(
        "SELECT {CLAIM_COLUMNS}, {ONLINE_AGE_SQL}
         FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
         WHERE r.lane = ?1 AND r.next_attempt_at <= ?2 AND (?3 IS NULL OR r.domain = ?3)
         ORDER BY r.next_attempt_at, r.rowid LIMIT ?4"
    ))?;
    for row in due.query_map(params![lane, now, domain, limit as i64], read)? {
        rows.push(row?);
    }
    if rows.len() == limit
        && let Some((_, Some(last))) = rows.last()
    {
        let last = last.message_id;
        let mut rest = tx.prepare_cached(&format!(
            "SELECT {CLAIM_COLUMNS}, {ONLINE_AGE_SQL}
             FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
             WHERE r.message_id = ?1 AND r.lane = ?2 AND r.next_attempt_at <= ?3
               AND (?4 IS NULL OR r.domain = ?4)"
        ))?;
        let taken: Vec<i64> = rows.iter().map(|(rowid, _)| *rowid).collect();
        for row in rest.query_map(params![last.as_str(), lane, now, domain], read)? {
            let row = row?;
            if !taken.contains(&row.0) {
                rows.push(row);
            }
        }
    }
    let mut lease = tx.prepare_cached(
        "UPDATE recipient SET state = 'in_flight', next_attempt_at = NULL, link_wait = 0,
             updated_at = ?1
         WHERE rowid = ?2",
    )?;
    let mut claims = Vec::with_capacity(rows.len());
    for (rowid, claim) in rows {
        lease.execute(params![now, rowid])?;
        // A row with a damaged id can name no file: it stays claimed until recovery.
        claims.extend(claim);
    }
    Ok(claims)
}

/// Records the outcome of a claimed recipient; a recipient no longer claimed (its
/// message deleted meanwhile) is left alone. Returns whether it was recorded.
pub fn record(
    tx: &Connection,
    id: QueueId,
    position: usize,
    outcome: &Verdict,
    now: i64,
) -> rusqlite::Result<bool> {
    let (reply, host, next, attempt, link_wait, warned) = match outcome {
        Verdict::Delivered { reply, host } => {
            (reply, Some(host.as_str()), None, true, false, false)
        }
        Verdict::Deferred {
            reply,
            host,
            next_attempt_at,
            attempt,
            warned,
        } => (
            reply,
            host.as_deref(),
            *next_attempt_at,
            *attempt,
            next_attempt_at.is_none(),
            *warned,
        ),
        Verdict::Bounced { reply, host } => (reply, host.as_deref(), None, true, false, false),
        Verdict::Expired { reply } => (reply, None, None, false, false, false),
    };
    let n = tx
        .prepare_cached(
            "UPDATE recipient SET state = ?1, last_reply = ?2,
                 last_host = COALESCE(?3, last_host), next_attempt_at = ?4,
                 attempts = attempts + ?5, link_wait = ?6, warned = MAX(warned, ?7),
                 updated_at = ?8
             WHERE message_id = ?9 AND position = ?10 AND state = 'in_flight'",
        )?
        .execute(params![
            outcome.state().as_str(),
            reply,
            host,
            next,
            i64::from(attempt),
            link_wait,
            warned,
            now,
            id.as_str(),
            position as i64
        ])?;
    Ok(n > 0)
}

/// A recipient that cannot be delivered whatever its state (its message file is
/// damaged) takes `outcome`, unless it is final already.
pub(crate) fn fail_pending(
    tx: &Connection,
    id: QueueId,
    position: usize,
    outcome: &Verdict,
    now: i64,
) -> rusqlite::Result<()> {
    let reply = match outcome {
        Verdict::Bounced { reply, .. } | Verdict::Expired { reply } => reply,
        Verdict::Delivered { reply, .. } | Verdict::Deferred { reply, .. } => reply,
    };
    tx.prepare_cached(&format!(
        "UPDATE recipient SET state = ?1, last_reply = ?2, next_attempt_at = NULL,
             link_wait = 0, updated_at = ?3
         WHERE message_id = ?4 AND position = ?5 AND state IN ({})",
        RecipientState::sql_list(RecipientState::PENDING)
    ))?
    .execute(params![
        outcome.state().as_str(),
        reply,
        now,
        id.as_str(),
        position as i64
    ])?;
    Ok(())
}

/// The positions of `id`'s recipients that are not final.
pub(crate) fn pending_positions(conn: &Connection, id: QueueId) -> rusqlite::Result<Vec<usize>> {
    conn.prepare_cached(&format!(
        "SELECT position FROM recipient WHERE message_id = ?1 AND state IN ({})
         ORDER BY position",
        RecipientState::sql_list(RecipientState::PENDING)
    ))?
    .query_map([id.as_str()], |r| Ok(r.get::<_, i64>(0)? as usize))?
    .collect()
}

/// Whether the outcomes a notice reports are recorded: its bounced or expired, warned,
/// or delivered recipients are so in the index (or the message has left the spool,
/// which it does only once every outcome is recorded).
pub fn reported(conn: &Connection, about: &super::envelope::About) -> rusqlite::Result<bool> {
    if !super::index::contains(conn, about.id)? {
        return Ok(true);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT state, warned FROM recipient WHERE message_id = ?1 AND position = ?2",
    )?;
    let mut check = |position: usize, ok: &dyn Fn(RecipientState, bool) -> bool| {
        stmt.query_row(params![about.id.as_str(), position as i64], |r| {
            let state = RecipientState::parse(&r.get::<_, String>(0)?);
            Ok(state.is_some_and(|s| ok(s, r.get(1).unwrap_or(false))))
        })
    };
    for p in &about.failed {
        if !check(*p, &|s, _| {
            matches!(s, RecipientState::Bounced | RecipientState::Expired)
        })? {
            return Ok(false);
        }
    }
    for p in &about.delayed {
        if !check(*p, &|_, warned| warned)? {
            return Ok(false);
        }
    }
    for p in &about.relayed {
        if !check(*p, &|s, _| s == RecipientState::Delivered)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A delivery of `lane` ended without recording some of its claims (it failed): they
/// are due now again, not counted as an attempt. Returns how many.
pub(crate) fn release_claims(tx: &Connection, lane: &str, now: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE recipient SET state = 'deferred', next_attempt_at = ?1, updated_at = ?1
         WHERE lane = ?2 AND state = 'in_flight'",
    )?
    .execute(params![now, lane])
}

/// When `lane`'s next recipient falls due; `None` when nothing of it waits for a time.
pub(crate) fn lane_next_due(conn: &Connection, lane: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MIN(next_attempt_at) FROM recipient
         WHERE lane = ?1 AND next_attempt_at IS NOT NULL",
    )?
    .query_row([lane], |r| r.get(0))
}

/// Every lane with mail waiting for a time, and when its first falls due (the owner's
/// schedule at start). Unplaced recipients are not in it.
pub(crate) fn due_lanes(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare(
        "SELECT lane, MIN(next_attempt_at) FROM recipient
         WHERE lane IS NOT NULL AND next_attempt_at IS NOT NULL GROUP BY lane",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// The domains with mail due on `lane` by `now`.
pub(crate) fn due_domains(
    conn: &Connection,
    lane: &str,
    now: i64,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT domain FROM recipient WHERE lane = ?1 AND next_attempt_at <= ?2",
    )?
    .query_map(params![lane, now], |r| r.get(0))?
    .collect()
}

/// The domains with mail waiting on `lane` for an ODMR turn: held, queued or deferred
/// (not in flight), whatever its due time.
pub(crate) fn turn_domains(conn: &Connection, lane: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT domain FROM recipient
         WHERE lane = ?1 AND state IN ('held', 'queued', 'deferred')",
    )?
    .query_map(params![lane], |r| r.get(0))?
    .collect()
}

/// Claims up to `limit` recipients of `lane` for `domain` for an ODMR turn: held,
/// queued or deferred alike (the station is here now), oldest first; a message's other
/// waiting recipients for the domain come along.
pub(crate) fn claim_turn(
    tx: &Connection,
    lane: &str,
    domain: &str,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Claim>> {
    let ids: Vec<String> = tx
        .prepare_cached(
            "SELECT DISTINCT message_id FROM recipient
             WHERE lane = ?1 AND domain = ?2 AND state IN ('held', 'queued', 'deferred')
             ORDER BY rowid LIMIT ?3",
        )?
        .query_map(params![lane, domain, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut select = tx.prepare_cached(&format!(
        "SELECT {CLAIM_COLUMNS}, {ONLINE_AGE_SQL}
         FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
         WHERE r.message_id = ?1 AND r.lane = ?2 AND r.domain = ?3
           AND r.state IN ('held', 'queued', 'deferred')"
    ))?;
    let mut lease = tx.prepare_cached(
        "UPDATE recipient SET state = 'in_flight', next_attempt_at = NULL, link_wait = 0,
             updated_at = ?1
         WHERE rowid = ?2",
    )?;
    let mut claims = Vec::new();
    for id in ids {
        let rows: Vec<(i64, Claim)> = select
            .query_map(params![id, lane, domain], claim_row)?
            .collect::<rusqlite::Result<_>>()?;
        for (rowid, claim) in rows {
            lease.execute(params![now, rowid])?;
            claims.push(claim);
        }
    }
    Ok(claims)
}

/// Some recipient still needs delivery (or is held).
pub(crate) fn anything_pending(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(&format!(
        "SELECT 1 FROM recipient WHERE state IN ({}) LIMIT 1",
        RecipientState::sql_list(RecipientState::PENDING)
    ))?
    .exists([])
}

/// Adds `secs` of online time to `route`'s clock: every recipient on that route ages by
/// as much, in one row.
pub(crate) fn advance_clock(
    conn: &Connection,
    route: &str,
    secs: i64,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO route_clock (route, online_secs, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (route) DO UPDATE SET online_secs = online_secs + ?2, updated_at = ?3",
    )?
    .execute(params![route, secs, now])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
