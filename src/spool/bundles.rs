//! The spool's part in bundles: claiming a route's waiting mail for an export, marking
//! what a bundle carried `bundled` until its receipt is due, sending back to the queue
//! what waited too long for one, claiming the recipients a receipt names, and what this
//! node has taken from other nodes' bundles (`imported`, filled as messages are
//! indexed, so a rebuilt index remembers them too). Queries walk `recipient_route`,
//! `recipient_bundled` and the primary keys.

use rusqlite::{Connection, params};

use super::claims::{CLAIM_COLUMNS, Claim, claim_row};
use super::id::QueueId;
use super::index::ONLINE_AGE_SQL;

/// How long this node remembers what it took from a bundle: no bundle younger than
/// this is taken twice (`bundle.max_age` is at most this).
pub const IMPORT_MEMORY_SECS: u64 = 90 * 86400;

const WAITING: &str = "('held', 'queued', 'deferred')";

/// Claims the waiting recipients (held, queued or deferred) of up to `limit` messages on
/// `route`, oldest first: the next part of an export.
pub(crate) fn claim_route(
    tx: &Connection,
    route: &str,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Claim>> {
    let ids: Vec<String> = tx
        .prepare_cached(&format!(
            "SELECT DISTINCT message_id FROM recipient
             WHERE route = ?1 AND state IN {WAITING} ORDER BY rowid LIMIT ?2"
        ))?
        .query_map(params![route, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut select = tx.prepare_cached(&format!(
        "SELECT {CLAIM_COLUMNS}, {ONLINE_AGE_SQL}
         FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
         WHERE r.message_id = ?1 AND r.route = ?2 AND r.state IN {WAITING}
         ORDER BY r.position"
    ))?;
    let mut claims = Vec::new();
    for id in ids {
        let rows: Vec<(i64, Claim)> = select
            .query_map(params![id, route], claim_row)?
            .collect::<rusqlite::Result<_>>()?;
        for (rowid, claim) in rows {
            lease(tx, rowid, now)?;
            claims.push(claim);
        }
    }
    Ok(claims)
}

fn lease(tx: &Connection, rowid: i64, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE recipient SET state = 'in_flight', next_attempt_at = NULL, link_wait = 0,
             bundle = NULL, bundle_until = NULL, updated_at = ?1
         WHERE rowid = ?2",
    )?
    .execute(params![now, rowid])?;
    Ok(())
}

/// Claimed recipients written into `bundle`: `bundled` until `until`. Returns how many
/// were still claimed.
pub(crate) fn mark_bundled(
    tx: &Connection,
    recipients: &[(QueueId, usize)],
    bundle: &str,
    until: i64,
    now: i64,
) -> rusqlite::Result<usize> {
    let mut mark = tx.prepare_cached(
        "UPDATE recipient SET state = 'bundled', bundle = ?1, bundle_until = ?2,
             last_reply = ?3, updated_at = ?4
         WHERE message_id = ?5 AND position = ?6 AND state = 'in_flight'",
    )?;
    let reply = format!("in bundle {bundle}, waiting for its receipt");
    let mut n = 0;
    for (id, position) in recipients {
        n += mark.execute(params![
            bundle,
            until,
            reply,
            now,
            id.as_str(),
            *position as i64
        ])?;
    }
    Ok(n)
}

/// Bundled recipients whose receipt is overdue go back to the queue: deferred and due
/// now (at most `limit` a step). Returns the lanes they are on.
pub(crate) fn release_bundled(
    tx: &Connection,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<String>> {
    let rows: Vec<(i64, Option<String>)> = tx
        .prepare_cached(
            "SELECT rowid, lane FROM recipient
             WHERE state = 'bundled' AND bundle_until <= ?1 LIMIT ?2",
        )?
        .query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut release = tx.prepare_cached(
        "UPDATE recipient SET state = 'deferred', next_attempt_at = ?1, updated_at = ?1,
             last_reply = 'no receipt for bundle ' || bundle || ' in time: sent again',
             bundle = NULL, bundle_until = NULL
         WHERE rowid = ?2",
    )?;
    let mut lanes = Vec::new();
    for (rowid, lane) in rows {
        release.execute(params![now, rowid])?;
        if let Some(lane) = lane
            && !lanes.contains(&lane)
        {
            lanes.push(lane);
        }
    }
    Ok(lanes)
}

/// When the next bundled recipient's receipt is overdue.
pub(crate) fn next_bundle_due(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(bundle_until) FROM recipient WHERE state = 'bundled'")?
        .query_row([], |r| r.get(0))
}

/// Claims the named recipients for a receipt's outcomes: bundled, or waiting again
/// (a receipt may come after its bundle's mail went back to the queue). Recipients in
/// flight or final are left alone.
pub(crate) fn claim_named(
    tx: &Connection,
    recipients: &[(QueueId, usize)],
    now: i64,
) -> rusqlite::Result<Vec<Claim>> {
    let mut select = tx.prepare_cached(&format!(
        "SELECT {CLAIM_COLUMNS}, {ONLINE_AGE_SQL}
         FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
         WHERE r.message_id = ?1 AND r.position = ?2
           AND r.state IN ('bundled', 'held', 'queued', 'deferred')"
    ))?;
    let mut claims = Vec::new();
    for (id, position) in recipients {
        let row = select
            .query_map(params![id.as_str(), *position as i64], claim_row)?
            .next()
            .transpose()?;
        if let Some((rowid, claim)) = row {
            lease(tx, rowid, now)?;
            claims.push(claim);
        }
    }
    Ok(claims)
}

/// The positions of `node`'s message `message` this node has taken already.
pub(crate) fn imported_positions(
    conn: &Connection,
    node: &str,
    message: &str,
) -> rusqlite::Result<Vec<usize>> {
    conn.prepare_cached("SELECT position FROM imported WHERE node = ?1 AND message = ?2")?
        .query_map(params![node, message], |r| Ok(r.get::<_, i64>(0)? as usize))?
        .collect()
}

/// Forgets what was taken before `before` (recovery, at start): bundles that old are
/// refused by their age.
pub(crate) fn prune_imported(tx: &Connection, before: i64) -> rusqlite::Result<usize> {
    tx.execute("DELETE FROM imported WHERE imported_at < ?1", [before])
}

#[cfg(test)]
mod tests;
