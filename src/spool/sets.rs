//! Set-based changes to recipient state, for the queue owner: an operator's hold,
//! release, retry and delete, flushes, link waits, holds of a hold route, clock clamps and
//! placement. Each call changes at most `limit` recipients, walking an index chosen for
//! its kind of change, and says whether more remain; the owner repeats it between other
//! work, so no change of any size holds the writer for more than a few milliseconds,
//! and a whole-queue change costs O(n log n), never one statement per message.

use std::collections::BTreeSet;

use rusqlite::{Connection, params_from_iter, types::Value};

use super::id::QueueId;
use super::index::Placement;

/// Which recipients (or messages) a change applies to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    All,
    Ids(Vec<QueueId>),
    /// One recipient domain (lower case).
    Domain(String),
    /// Every lane of one route.
    Route(String),
}

/// What one step of a change did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Recipients changed (for `delete`: messages removed).
    pub changed: usize,
    /// Their messages, each once.
    pub messages: Vec<QueueId>,
    /// The lanes they are on, each once: those whose due times moved.
    pub lanes: Vec<String>,
    /// The step was full: call again for the rest.
    pub more: bool,
}

/// An operator's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Waiting recipients (`queued`, `deferred`) become `held`.
    Hold,
    /// `held` recipients become `queued`, due now.
    Release,
    /// Recipients waiting for a time are due now.
    Retry,
}

/// The rows of `scope`, as a condition on `recipient` and its parameters. `All` is
/// given by the caller, which knows the index that suits its change.
fn scope_condition(scope: &Scope) -> (String, Vec<Value>) {
    match scope {
        Scope::All => ("1".into(), vec![]),
        Scope::Ids(ids) => {
            let marks = vec!["?"; ids.len()].join(",");
            (
                format!("message_id IN ({marks})"),
                ids.iter().map(|id| Value::Text(id.to_string())).collect(),
            )
        }
        Scope::Domain(domain) => ("domain = ?".into(), vec![Value::Text(domain.clone())]),
        // A route's lanes are named by the route, or by the route, a space and a domain.
        Scope::Route(route) => (
            "(lane = ? OR (lane > ? AND lane < ?))".into(),
            vec![
                Value::Text(route.clone()),
                Value::Text(format!("{route} ")),
                Value::Text(format!("{route}!")),
            ],
        ),
    }
}

/// Runs `UPDATE recipient SET {set} WHERE rowid IN (SELECT … WHERE {condition} LIMIT n)`
/// and gathers what it touched.
fn update(
    tx: &Connection,
    set: &str,
    set_params: Vec<Value>,
    condition: &str,
    condition_params: Vec<Value>,
    limit: usize,
) -> rusqlite::Result<Batch> {
    let sql = format!(
        "UPDATE recipient SET {set} WHERE rowid IN
             (SELECT rowid FROM recipient WHERE {condition} LIMIT {limit})
         RETURNING message_id, lane"
    );
    let params = set_params.into_iter().chain(condition_params);
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    let mut batch = Batch::default();
    let (mut messages, mut lanes) = (BTreeSet::new(), BTreeSet::new());
    for row in rows {
        let (id, lane) = row?;
        batch.changed += 1;
        if let Ok(id) = QueueId::parse(&id) {
            messages.insert(id);
        }
        lanes.extend(lane);
    }
    batch.messages = messages.into_iter().collect();
    batch.lanes = lanes.into_iter().collect();
    batch.more = batch.changed == limit;
    Ok(batch)
}

/// One step of an operator's change over `scope`.
pub fn apply(
    tx: &Connection,
    action: Action,
    scope: &Scope,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Batch> {
    let (within, params) = scope_condition(scope);
    let now_v = Value::Integer(now);
    match action {
        Action::Retry => {
            // Mail waiting for its link is not waiting for a time: the gate releases it.
            let condition =
                format!("{within} AND next_attempt_at > ? AND state IN ('queued', 'deferred')");
            let mut p = params.clone();
            p.push(now_v.clone());
            let mut total = update(
                tx,
                "next_attempt_at = ?, updated_at = ?",
                vec![now_v.clone(), now_v.clone()],
                &condition,
                p,
                limit,
            )?;
            if total.changed < limit {
                // Bundled mail goes again without waiting for its receipt.
                let b = update(
                    tx,
                    "state = 'deferred', next_attempt_at = ?, bundle = NULL, \
                     bundle_until = NULL, updated_at = ?",
                    vec![now_v.clone(), now_v],
                    &format!("{within} AND state = 'bundled'"),
                    params,
                    limit - total.changed,
                )?;
                merge(&mut total, b);
                total.more = total.changed == limit;
            }
            Ok(total)
        }
        Action::Release => {
            let condition = format!("{within} AND state = 'held'");
            update(
                tx,
                "state = 'queued', next_attempt_at = ?, link_wait = 0, updated_at = ?",
                vec![now_v.clone(), now_v],
                &condition,
                params,
                limit,
            )
        }
        Action::Hold => {
            let set = "state = 'held', next_attempt_at = NULL, link_wait = 0, updated_at = ?";
            // Two indexed ranges for the whole queue: waiting for a time, then for the link.
            let conditions: Vec<String> = if *scope == Scope::All {
                vec![
                    "next_attempt_at IS NOT NULL".into(),
                    "link_wait = 1 AND state IN ('queued', 'deferred')".into(),
                ]
            } else {
                vec![format!("{within} AND state IN ('queued', 'deferred')")]
            };
            let mut total = Batch::default();
            for condition in conditions {
                let left = limit - total.changed;
                let b = update(
                    tx,
                    set,
                    vec![now_v.clone()],
                    &condition,
                    params.clone(),
                    left,
                )?;
                merge(&mut total, b);
                if total.changed == limit {
                    break;
                }
            }
            total.more = total.changed == limit;
            Ok(total)
        }
    }
}

fn merge(into: &mut Batch, b: Batch) {
    into.changed += b.changed;
    into.messages.extend(b.messages);
    into.messages.sort();
    into.messages.dedup();
    into.lanes.extend(b.lanes);
    into.lanes.sort();
    into.lanes.dedup();
}

/// The next messages of `scope` to delete, at most `limit`.
pub(crate) fn messages_in(
    tx: &Connection,
    scope: &Scope,
    limit: usize,
) -> rusqlite::Result<Vec<QueueId>> {
    let sql = match scope {
        Scope::All => format!("SELECT id FROM message ORDER BY rowid LIMIT {limit}"),
        Scope::Ids(_) => format!(
            "SELECT id FROM message WHERE id IN (SELECT value FROM json_each(?)) LIMIT {limit}"
        ),
        _ => {
            let (within, _) = scope_condition(scope);
            format!("SELECT DISTINCT message_id FROM recipient WHERE {within} LIMIT {limit}")
        }
    };
    let params: Vec<Value> = match scope {
        Scope::All => vec![],
        Scope::Ids(ids) => vec![Value::Text(
            serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()),
        )],
        other => scope_condition(other).1,
    };
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for id in rows {
        if let Ok(id) = QueueId::parse(&id?) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Mail of `route` (only `domain`'s, when given) waiting for the link is due now: the
/// gate opened (for that domain).
pub(crate) fn release_link_wait(
    tx: &Connection,
    route: &str,
    domain: Option<&str>,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Batch> {
    let mut condition = "link_wait = 1 AND route = ?".to_owned();
    let mut p = vec![Value::Text(route.into())];
    if let Some(d) = domain {
        condition.push_str(" AND domain = ?");
        p.push(Value::Text(d.into()));
    }
    update(
        tx,
        "link_wait = 0, next_attempt_at = ?, updated_at = ?",
        vec![Value::Integer(now), Value::Integer(now)],
        &condition,
        p,
        limit,
    )
}

/// Due mail of `lane` (only `domain`'s, when given) waits for its route's gate, with
/// `reason` shown.
pub(crate) fn wait_for_link(
    tx: &Connection,
    lane: &str,
    domain: Option<&str>,
    reason: &str,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Batch> {
    let (condition, p) = due_on(lane, domain, now);
    update(
        tx,
        "link_wait = 1, next_attempt_at = NULL, last_reply = ?, updated_at = ?",
        vec![Value::Text(reason.into()), Value::Integer(now)],
        &condition,
        p,
        limit,
    )
}

/// Due mail of `lane` for `domain` is `held` (a hold route whose domain is not open).
pub(crate) fn hold_due(
    tx: &Connection,
    lane: &str,
    domain: &str,
    reason: &str,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Batch> {
    let (condition, p) = due_on(lane, Some(domain), now);
    update(
        tx,
        "state = 'held', next_attempt_at = NULL, last_reply = ?, updated_at = ?",
        vec![Value::Text(reason.into()), Value::Integer(now)],
        &condition,
        p,
        limit,
    )
}

fn due_on(lane: &str, domain: Option<&str>, now: i64) -> (String, Vec<Value>) {
    let mut condition = "lane = ? AND next_attempt_at <= ?".to_owned();
    let mut p = vec![Value::Text(lane.into()), Value::Integer(now)];
    if let Some(d) = domain {
        condition.push_str(" AND domain = ?");
        p.push(Value::Text(d.into()));
    }
    (condition, p)
}

/// Mail due later than `latest` is due at `latest`: at start and after the wall clock
/// went back, no retry waits longer than `retry.max`.
pub(crate) fn clamp_due(tx: &Connection, latest: i64, limit: usize) -> rusqlite::Result<Batch> {
    update(
        tx,
        "next_attempt_at = ?",
        vec![Value::Integer(latest)],
        "next_attempt_at > ?",
        vec![Value::Integer(latest)],
        limit,
    )
}

/// Pending mail of `domain` not yet on `placement`'s lane moves there (placed for the
/// first time, or the configuration changed): it takes its online age so far along and
/// starts on the new route's clock. Claimed mail is left to its delivery.
pub fn place(
    tx: &Connection,
    domain: &str,
    placement: &Placement,
    limit: usize,
) -> rusqlite::Result<Batch> {
    update(
        tx,
        "online_age = online_age + COALESCE(
             (SELECT c.online_secs FROM route_clock c WHERE c.route = recipient.route)
                 - online_mark, 0),
         online_mark = COALESCE((SELECT online_secs FROM route_clock WHERE route = ?), 0),
         route = ?, lane = ?",
        vec![
            Value::Text(placement.route.clone()),
            Value::Text(placement.route.clone()),
            Value::Text(placement.lane.clone()),
        ],
        "domain = ? AND state IN ('queued', 'deferred', 'held') AND lane IS NOT ?",
        vec![
            Value::Text(domain.into()),
            Value::Text(placement.lane.clone()),
        ],
        limit,
    )
}

/// Each domain with pending mail, and the lanes its mail is on (`None`: not placed):
/// what placement checks against the routes at start.
pub(crate) fn placed_domains(tx: &Connection) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    tx.prepare(
        "SELECT DISTINCT domain, lane FROM recipient
         WHERE state IN ('queued', 'deferred', 'held')",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

#[cfg(test)]
mod tests;
