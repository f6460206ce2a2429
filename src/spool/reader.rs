//! Reading the index, for everyone but its writer: the CLI (listing, `queue show`), the
//! daemon's status, progress and metrics, and the maildrop pickup. Each opens its own
//! read-only connection (WAL readers never wait for the writer), and every question is a
//! named function here, so no SQL lives outside the spool. Listing streams rows message
//! by message: a 100k-message queue is never held in memory.

use std::io;

use rusqlite::Connection;
use serde::Serialize;

use super::id::QueueId;
use super::index::{self, ONLINE_AGE_SQL};
use super::layout::Layout;
use super::state::RecipientState;

/// One message, as README, "Configuration"'s `--json` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueEntry {
    /// The queue id; `None` for a drop not yet picked up by the daemon.
    pub id: Option<String>,
    /// `queue`, or `maildrop` for a drop waiting for the daemon.
    pub location: &'static str,
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub size: u64,
    /// Unix seconds.
    pub received_at: i64,
    pub recipients: Vec<RecipientEntry>,
    /// The maildrop file name, for drops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A failed notice kept for the operator (a double bounce): it stays until deleted.
    pub kept: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecipientEntry {
    pub address: String,
    /// `None` for drops (no state until picked up).
    pub state: Option<RecipientState>,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    /// Seconds queued while the link was up (counts toward expiry).
    pub online_age: i64,
    pub last_reply: Option<String>,
    pub last_host: Option<String>,
    /// Waiting for its route's link gate to open (then due at once).
    pub link_wait: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the index: {0}")]
    Index(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What the queue holds, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Recipients by state (states with none left out).
    pub by_state: Vec<(RecipientState, i64)>,
    /// Pending recipients (queued, deferred, in flight, held) by route.
    pub by_route: Vec<(String, i64)>,
    pub messages: i64,
    /// Failed notices kept for the operator (double bounces).
    pub kept: i64,
    /// Unix seconds the oldest message arrived.
    pub oldest_at: Option<i64>,
}

/// Recipients waiting for a later time or for their link (`?1` is now).
const WAITING: &str =
    "state IN ('queued', 'deferred') AND (next_attempt_at IS NULL OR next_attempt_at > ?1)";
const WAITING_W: &str =
    "w.state IN ('queued', 'deferred') AND (w.next_attempt_at IS NULL OR w.next_attempt_at > ?1)";

/// Mail of one route still waiting, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WaitingRoute {
    pub route: String,
    pub recipients: i64,
    /// The latest reason one of them was given (a reply, or why its link is down).
    pub reason: Option<String>,
}

/// A read-only view of the index.
pub struct IndexReader {
    conn: Connection,
}

impl IndexReader {
    /// Opens the index of `layout`; `None` when there is none yet.
    pub fn open(layout: &Layout) -> Result<Option<IndexReader>, ReadError> {
        Ok(index::open_read_only(&layout.index)?.map(|conn| IndexReader { conn }))
    }

    /// Recipients by state.
    pub(crate) fn count_by_state(&self) -> Result<Vec<(RecipientState, i64)>, ReadError> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM recipient GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (state, n) = row?;
            if let Some(state) = RecipientState::parse(&state) {
                out.push((state, n));
            }
        }
        Ok(out)
    }

    pub fn summary(&self) -> Result<Summary, ReadError> {
        let (messages, oldest_at) =
            self.conn
                .query_row("SELECT COUNT(*), MIN(received_at) FROM message", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        let version = index::schema_version(&self.conn)?;
        let kept = if version >= 4 {
            self.conn
                .query_row("SELECT COUNT(*) FROM message WHERE kept", [], |r| r.get(0))?
        } else {
            0
        };
        let by_route = if version >= 2 {
            self.conn
                .prepare(&format!(
                    "SELECT COALESCE(route, '(not yet routed)'), COUNT(*) FROM recipient
                     WHERE state IN ({}) GROUP BY 1",
                    RecipientState::sql_list(RecipientState::PENDING)
                ))?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Summary {
            by_state: self.count_by_state()?,
            by_route,
            messages,
            kept,
            oldest_at,
        })
    }

    /// Recipients due by `now` or in flight, and recipients still waiting (deferred to a
    /// later time, or waiting for their link; held mail is not counted): what `flush
    /// --wait` follows until the first is zero. With `domain`, that domain's only.
    pub(crate) fn busy_and_waiting(
        &self,
        now: i64,
        domain: Option<&str>,
    ) -> Result<(i64, i64), ReadError> {
        Ok(self.conn.query_row(
            &format!(
                "SELECT
                   COUNT(*) FILTER (WHERE state = 'in_flight' OR next_attempt_at <= ?1),
                   COUNT(*) FILTER (WHERE {WAITING})
                 FROM recipient WHERE ?2 IS NULL OR domain = ?2"
            ),
            rusqlite::params![now, domain],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Per route, the recipients still waiting and the last reason one of them was
    /// given (`busy_and_waiting`'s second count, explained).
    pub(crate) fn waiting_by_route(
        &self,
        now: i64,
        domain: Option<&str>,
    ) -> Result<Vec<WaitingRoute>, ReadError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT COALESCE(route, ''), COUNT(*),
                    (SELECT w.last_reply FROM recipient w
                     WHERE w.route IS r.route AND {WAITING_W} AND (?2 IS NULL OR w.domain = ?2)
                     ORDER BY w.updated_at DESC LIMIT 1)
             FROM recipient r WHERE {WAITING} AND (?2 IS NULL OR domain = ?2)
             GROUP BY r.route"
        ))?;
        let rows = stmt.query_map(rusqlite::params![now, domain], |r| {
            Ok(WaitingRoute {
                route: r.get(0)?,
                recipients: r.get(1)?,
                reason: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Recipients waiting on each of `lanes` by domain (held, queued or deferred).
    pub(crate) fn waiting_by_domain(
        &self,
        lanes: &[String],
    ) -> Result<Vec<(String, i64)>, ReadError> {
        let mut stmt = self.conn.prepare(
            "SELECT domain, COUNT(*) FROM recipient
             WHERE lane = ?1 AND state IN ('held', 'queued', 'deferred') GROUP BY domain",
        )?;
        let mut out = Vec::new();
        for lane in lanes {
            let rows = stmt.query_map([lane], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }

    /// Ids of every message in the index, oldest first.
    pub fn all_ids(&self) -> Result<Vec<QueueId>, ReadError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM message ORDER BY received_at, id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for id in rows {
            if let Ok(id) = QueueId::parse(&id?) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// A maildrop file of this name was committed (and maybe already delivered).
    pub(crate) fn has_drop(&self, name: &str) -> Result<bool, ReadError> {
        Ok(index::has_drop(&self.conn, name)?)
    }

    /// The positions of `node`'s message `message` this node took from a bundle before.
    pub(crate) fn imported_positions(
        &self,
        node: &str,
        message: &str,
    ) -> Result<Vec<usize>, ReadError> {
        Ok(super::bundles::imported_positions(
            &self.conn, node, message,
        )?)
    }

    /// Domains with pending mail at `domain` or below it (for ETRN `@domain`).
    pub(crate) fn domains_under(&self, domain: &str) -> Result<Vec<String>, ReadError> {
        let suffix = format!(".{domain}");
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT DISTINCT domain FROM recipient WHERE state IN ({})",
            RecipientState::sql_list(RecipientState::PENDING)
        ))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for d in rows {
            let d = d?;
            if d == domain || d.ends_with(&suffix) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Recipients of `domains` waiting for delivery (queued, deferred or held).
    pub(crate) fn waiting_in(&self, domains: &[String]) -> Result<usize, ReadError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COUNT(*) FROM recipient
             WHERE domain = ?1 AND state IN ('queued', 'deferred', 'held')",
        )?;
        let mut n = 0;
        for d in domains {
            n += stmt.query_row([d], |r| r.get::<_, i64>(0))? as usize;
        }
        Ok(n)
    }

    /// Calls `f` for each queued message, oldest first; `only` restricts to one id.
    pub fn for_each_entry(
        &self,
        only: Option<&str>,
        mut f: impl FnMut(QueueEntry) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        // An index the daemon has not migrated yet has no route clocks (before version
        // 2) and keeps nothing (before version 4).
        let version = index::schema_version(&self.conn)?;
        let kept = if version >= 4 { "m.kept" } else { "0" };
        let (age, link_wait, clocks) = if version >= 2 {
            (
                ONLINE_AGE_SQL,
                "r.link_wait",
                "LEFT JOIN route_clock c ON c.route = r.route",
            )
        } else {
            ("r.online_age", "0", "")
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT m.id, m.sender, m.size, m.received_at, r.address, r.state, r.attempts,
                    r.next_attempt_at, {age}, r.last_reply, r.last_host, {link_wait}, {kept}
             FROM message m JOIN recipient r ON r.message_id = m.id {clocks}
             WHERE ?1 IS NULL OR m.id = ?1
             ORDER BY m.received_at, m.id, r.position"
        ))?;
        let mut rows = stmt.query([only])?;
        let mut current: Option<QueueEntry> = None;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            if current.as_ref().and_then(|e| e.id.as_deref()) != Some(id.as_str()) {
                if let Some(done) = current.take() {
                    f(done)?;
                }
                current = Some(QueueEntry {
                    id: Some(id),
                    location: "queue",
                    sender: row.get(1)?,
                    size: row.get::<_, i64>(2)? as u64,
                    received_at: row.get(3)?,
                    recipients: Vec::new(),
                    file: None,
                    kept: row.get(12)?,
                });
            }
            let entry = current.as_mut().expect("set above");
            entry.recipients.push(RecipientEntry {
                address: row.get(4)?,
                state: Some(row.get(5)?),
                attempts: row.get(6)?,
                next_attempt_at: row.get(7)?,
                online_age: row.get(8)?,
                last_reply: row.get(9)?,
                last_host: row.get(10)?,
                link_wait: row.get(11)?,
            });
        }
        if let Some(done) = current {
            f(done)?;
        }
        Ok(())
    }
}
