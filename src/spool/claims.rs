//! The queue owner's writes to per-recipient state: claiming due recipients for delivery
//! and recording what became of them. A claim marks a recipient `in_flight` and sets its
//! `next_attempt_at` to the end of the lease: if the delivery holding it dies, the lease
//! runs out and the recipient is due again (restart resets every claim at once). Only
//! attempts that reached a destination count and grow the backoff (DESIGN §1.4).
//! Routing is decided once per due domain, so a route that cannot deliver now settles
//! all of its mail in one statement, however large the backlog.

use rusqlite::{Connection, Transaction, params};

use super::id::QueueId;
use super::index::ONLINE_AGE_SQL;
use super::state::RecipientState;

/// A recipient handed to delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub message_id: QueueId,
    pub position: usize,
    pub address: String,
    pub domain: String,
    pub attempts: i64,
    /// Seconds queued while its route's link was up, as of the claim.
    pub online_age: i64,
    /// Its delay notice has gone out.
    pub warned: bool,
}

/// What became of a claimed recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    Delivered {
        reply: String,
        host: String,
    },
    /// `attempt`: the destination answered (counts toward the backoff); false for our
    /// own link being down, which leaves the attempts as they were. `link_wait`: due
    /// again as soon as the route's gate opens. `warned`: a delay notice went out.
    Deferred {
        reply: String,
        host: Option<String>,
        next_attempt_at: i64,
        attempt: bool,
        link_wait: bool,
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

/// What the queue owner does with a domain's due recipients, decided by its route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Claim them for delivery over `route`.
    Deliver { route: String },
    /// A hold route: `held` until a flush or ETRN names the domain.
    Hold { route: String, reply: String },
    /// The route's gate is closed: they keep their state and wait for it to open
    /// (`link_wait`), looked at again at `until` at the latest, with the reason shown.
    Wait {
        route: String,
        reply: String,
        until: i64,
    },
    /// Not now (their route's connection is busy): left as they are.
    Skip,
}

/// The routing decision, called once per due domain in one claim.
pub type Decide = dyn FnMut(&str) -> Disposition + Send;

const WAITING: &str = "('queued', 'deferred', 'in_flight')";

/// Claims up to `limit` due recipients: `queued` or `deferred` ones due by `now`, and
/// `in_flight` ones whose lease has run out. Domains are taken oldest due first, and
/// `decide` routes each; only those to deliver are claimed, the rest are settled in the
/// same transaction, so no recipient is ever seen `in_flight` without a delivery behind it.
pub fn claim_due(
    tx: &Transaction<'_>,
    now: i64,
    lease_secs: i64,
    limit: usize,
    decide: &mut Decide,
) -> rusqlite::Result<Vec<Claim>> {
    let domains: Vec<String> = tx
        .prepare_cached(&format!(
            "SELECT domain FROM recipient WHERE state IN {WAITING} AND next_attempt_at <= ?1
             GROUP BY domain ORDER BY MIN(next_attempt_at), domain"
        ))?
        .query_map([now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut claims = Vec::new();
    for domain in domains {
        if claims.len() >= limit {
            break;
        }
        match decide(&domain) {
            Disposition::Skip => {}
            Disposition::Deliver { route } => {
                settle_route(tx, &domain, &route, now)?;
                claim_domain(
                    tx,
                    &domain,
                    now,
                    lease_secs,
                    limit - claims.len(),
                    &mut claims,
                )?;
            }
            Disposition::Hold { route, reply } => {
                settle_route(tx, &domain, &route, now)?;
                tx.prepare_cached(&format!(
                    "UPDATE recipient SET state = 'held', last_reply = ?1, next_attempt_at = ?2,
                         link_wait = 0, updated_at = ?2
                     WHERE domain = ?3 AND state IN {WAITING} AND next_attempt_at <= ?2"
                ))?
                .execute(params![reply, now, domain])?;
            }
            Disposition::Wait {
                route,
                reply,
                until,
            } => {
                settle_route(tx, &domain, &route, now)?;
                // A lease that ran out without an outcome counts as deferred.
                tx.prepare_cached(&format!(
                    "UPDATE recipient SET
                         state = CASE state WHEN 'in_flight' THEN 'deferred' ELSE state END,
                         last_reply = ?1, next_attempt_at = ?2, link_wait = 1, updated_at = ?3
                     WHERE domain = ?4 AND state IN {WAITING} AND next_attempt_at <= ?3"
                ))?
                .execute(params![reply, until, now, domain])?;
            }
        }
    }
    Ok(claims)
}

/// Due recipients of `domain` whose route differs from `route` take their online age so
/// far with them and start on `route`'s clock.
fn settle_route(tx: &Transaction<'_>, domain: &str, route: &str, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "UPDATE recipient SET
             online_age = online_age + COALESCE(
                 (SELECT online_secs FROM route_clock c WHERE c.route = recipient.route)
                     - online_mark, 0),
             online_mark = COALESCE(
                 (SELECT online_secs FROM route_clock c WHERE c.route = ?1), 0),
             route = ?1
         WHERE domain = ?2 AND state IN {WAITING} AND next_attempt_at <= ?3
           AND route IS NOT ?1"
    ))?
    .execute(params![route, domain, now])?;
    Ok(())
}

fn claim_domain(
    tx: &Transaction<'_>,
    domain: &str,
    now: i64,
    lease_secs: i64,
    limit: usize,
    claims: &mut Vec<Claim>,
) -> rusqlite::Result<()> {
    let first = claims.len();
    {
        let mut select = tx.prepare_cached(&format!(
            "SELECT r.message_id, r.position, r.address, r.attempts, {ONLINE_AGE_SQL}, r.warned
             FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
             WHERE r.domain = ?1 AND r.state IN {WAITING} AND r.next_attempt_at <= ?2
             ORDER BY r.next_attempt_at, r.message_id, r.position LIMIT ?3"
        ))?;
        let rows = select.query_map(params![domain, now, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?;
        for row in rows {
            let (id, position, address, attempts, online_age, warned) = row?;
            let Ok(message_id) = QueueId::parse(&id) else {
                continue;
            };
            claims.push(Claim {
                message_id,
                position: position as usize,
                address,
                domain: domain.to_owned(),
                attempts,
                online_age,
                warned,
            });
        }
    }
    let mut lease = tx.prepare_cached(
        "UPDATE recipient SET state = 'in_flight', next_attempt_at = ?1, link_wait = 0,
             updated_at = ?2
         WHERE message_id = ?3 AND position = ?4",
    )?;
    for c in &claims[first..] {
        lease.execute(params![
            now + lease_secs,
            now,
            c.message_id.as_str(),
            c.position as i64
        ])?;
    }
    Ok(())
}

/// Records the outcome of a claimed recipient.
pub fn record(
    tx: &Transaction<'_>,
    id: QueueId,
    position: usize,
    outcome: &Recorded,
    now: i64,
) -> rusqlite::Result<()> {
    let (state, reply, host, next, attempt, link_wait, warned) = match outcome {
        Recorded::Delivered { reply, host } => (
            RecipientState::Delivered,
            reply,
            Some(host.as_str()),
            None,
            true,
            false,
            false,
        ),
        Recorded::Deferred {
            reply,
            host,
            next_attempt_at,
            attempt,
            link_wait,
            warned,
        } => (
            RecipientState::Deferred,
            reply,
            host.as_deref(),
            Some(*next_attempt_at),
            *attempt,
            *link_wait,
            *warned,
        ),
        Recorded::Bounced { reply, host } => (
            RecipientState::Bounced,
            reply,
            host.as_deref(),
            None,
            true,
            false,
            false,
        ),
        Recorded::Expired { reply } => (
            RecipientState::Expired,
            reply,
            None,
            None,
            false,
            false,
            false,
        ),
    };
    tx.prepare_cached(
        "UPDATE recipient SET state = ?1, last_reply = ?2, last_host = COALESCE(?3, last_host),
             next_attempt_at = ?4, attempts = attempts + ?5, link_wait = ?6,
             warned = MAX(warned, ?7), updated_at = ?8
         WHERE message_id = ?9 AND position = ?10",
    )?
    .execute(params![
        state.as_str(),
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
    Ok(())
}

/// Adds `secs` of online time to `route`'s clock: every recipient on that route ages by
/// as much, in one row.
pub fn advance_clock(conn: &Connection, route: &str, secs: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO route_clock (route, online_secs, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (route) DO UPDATE SET online_secs = online_secs + ?2, updated_at = ?3",
    )?
    .execute(params![route, secs, now])?;
    Ok(())
}

/// When the next recipient falls due (waiting ones and leases), for the wake loop.
pub fn next_due(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        &format!("SELECT MIN(next_attempt_at) FROM recipient WHERE state IN {WAITING}"),
        [],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests;
