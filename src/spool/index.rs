//! The SQLite index of the queue: one row per message, one per recipient, holding all
//! per-recipient state. It is derived from `queue/` (every row's file exists; rebuilt by
//! reindex, with the outcome journal replayed), opened in WAL with `synchronous=FULL` so
//! a commit is durable when it returns. Writes happen only on the writer thread; readers
//! open their own read-only connection (`reader`). This file holds the schema, its
//! migrations, and the statements that add and remove whole messages.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::envelope::{StoredMessage, check_envelope};
use super::id::QueueId;
use super::state::RecipientState;

/// Schema version, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 5;

fn schema_v1() -> String {
    format!(
        "CREATE TABLE message (
            id TEXT PRIMARY KEY NOT NULL,
            sender TEXT NOT NULL,
            size INTEGER NOT NULL,
            eight_bit INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            drop_name TEXT UNIQUE
        ) STRICT;
        CREATE TABLE recipient (
            message_id TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            address TEXT NOT NULL,
            domain TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({})),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER,
            online_age INTEGER NOT NULL DEFAULT 0,
            last_reply TEXT,
            last_host TEXT,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (message_id, position)
        ) STRICT;
        CREATE INDEX recipient_due ON recipient(state, next_attempt_at);
        CREATE INDEX recipient_domain ON recipient(domain, state);",
        RecipientState::sql_list(RecipientState::ALL)
    )
}

/// Version 2: the online-age clock and waiting for the link (README, "Intermittent links"). A recipient
/// remembers the route it was last sent to and that route's online clock at that moment
/// (`online_mark`); its online age is `online_age + route_clock.online_secs -
/// online_mark`, so ageing a whole route costs one row, not one per recipient.
/// `link_wait` marks mail that waits for its route's gate to open; `warned` that its
/// delay notice went out. `finished_drop` remembers the maildrop names of messages that
/// already left the spool, so a drop whose unlink a crash interrupted is not queued again
/// even when its message was delivered that fast.
const SCHEMA_V2: &str = "
    ALTER TABLE recipient ADD COLUMN route TEXT;
    ALTER TABLE recipient ADD COLUMN online_mark INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recipient ADD COLUMN link_wait INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recipient ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX recipient_link_wait ON recipient(route) WHERE link_wait = 1;
    CREATE TABLE route_clock (
        route TEXT PRIMARY KEY NOT NULL,
        online_secs INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE finished_drop (
        drop_name TEXT PRIMARY KEY NOT NULL,
        finished_at INTEGER NOT NULL
    ) STRICT;";

/// Version 3: the queue at backlog scale. A recipient is placed on its `lane` (what one
/// connection serves) when it is committed, so claims read one lane's due mail from an
/// index instead of grouping the whole queue. `next_attempt_at` is set only while the
/// recipient waits for a time (`queued` or `deferred`, not waiting for its link), so
/// everything due is one range of `recipient_due`, and set-based changes walk indexes in
/// bounded batches. `meta` keeps how far the outcome journal has been applied.
const SCHEMA_V3: &str = "
    ALTER TABLE recipient ADD COLUMN lane TEXT;
    UPDATE recipient SET next_attempt_at = NULL
        WHERE state NOT IN ('queued', 'deferred') OR link_wait = 1;
    DROP INDEX recipient_due;
    CREATE INDEX recipient_due ON recipient(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX recipient_lane ON recipient(lane, next_attempt_at);
    DROP INDEX recipient_link_wait;
    CREATE INDEX recipient_link_wait ON recipient(route, domain) WHERE link_wait = 1;
    CREATE INDEX recipient_held ON recipient(message_id) WHERE state = 'held';
    CREATE INDEX recipient_in_flight ON recipient(lane) WHERE state = 'in_flight';
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT;";

/// Version 4: `message.kept` marks a notice nobody could receive (a double bounce): it
/// stays for the operator although every recipient is final.
const SCHEMA_V4: &str = "ALTER TABLE message ADD COLUMN kept INTEGER NOT NULL DEFAULT 0;";

/// Version 5: bundles. A recipient may be `bundled` (written into a bundle, waiting for
/// the peer's receipt until `bundle_until`), which the state's CHECK constraint must
/// allow: SQLite cannot change a constraint in place, so the table is built anew and
/// its rows copied. `imported` remembers what this node took from other nodes' bundles
/// (node, their queue id, their position), so no bundle is taken twice.
fn schema_v5() -> String {
    format!(
        "CREATE TABLE recipient_v5 (
            message_id TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            address TEXT NOT NULL,
            domain TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({})),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER,
            online_age INTEGER NOT NULL DEFAULT 0,
            last_reply TEXT,
            last_host TEXT,
            updated_at INTEGER NOT NULL,
            route TEXT,
            online_mark INTEGER NOT NULL DEFAULT 0,
            link_wait INTEGER NOT NULL DEFAULT 0,
            warned INTEGER NOT NULL DEFAULT 0,
            lane TEXT,
            bundle TEXT,
            bundle_until INTEGER,
            PRIMARY KEY (message_id, position)
        ) STRICT;
        INSERT INTO recipient_v5 (rowid, message_id, position, address, domain, state,
            attempts, next_attempt_at, online_age, last_reply, last_host, updated_at, route,
            online_mark, link_wait, warned, lane)
        SELECT rowid, message_id, position, address, domain, state, attempts,
            next_attempt_at, online_age, last_reply, last_host, updated_at, route,
            online_mark, link_wait, warned, lane FROM recipient;
        DROP TABLE recipient;
        ALTER TABLE recipient_v5 RENAME TO recipient;
        CREATE INDEX recipient_domain ON recipient(domain, state);
        CREATE INDEX recipient_due ON recipient(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
        CREATE INDEX recipient_lane ON recipient(lane, next_attempt_at);
        CREATE INDEX recipient_link_wait ON recipient(route, domain) WHERE link_wait = 1;
        CREATE INDEX recipient_held ON recipient(message_id) WHERE state = 'held';
        CREATE INDEX recipient_in_flight ON recipient(lane) WHERE state = 'in_flight';
        CREATE INDEX recipient_bundled ON recipient(bundle_until) WHERE state = 'bundled';
        CREATE INDEX recipient_route ON recipient(route, state);
        CREATE TABLE imported (
            node TEXT NOT NULL,
            message TEXT NOT NULL,
            position INTEGER NOT NULL,
            queue_id TEXT NOT NULL,
            imported_at INTEGER NOT NULL,
            PRIMARY KEY (node, message, position)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX imported_at ON imported(imported_at);",
        RecipientState::sql_list(RecipientState::ALL)
    )
}

/// A recipient's online age in seconds, as SQL over `recipient r LEFT JOIN route_clock c
/// ON c.route = r.route`.
pub const ONLINE_AGE_SQL: &str = "(r.online_age + COALESCE(c.online_secs - r.online_mark, 0))";

/// Why an index could not be opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Written by a newer ferrymail: never to be taken for damage and rebuilt.
    #[error(
        "index schema version {0} is newer than this ferrymail understands ({SCHEMA_VERSION}); \
         run the newer ferrymail, or move the index aside to rebuild it"
    )]
    TooNew(i64),
}

/// Opens (creating if needed) the index for writing, migrated to `SCHEMA_VERSION`.
pub fn open_writer(path: &Path) -> Result<Connection, OpenError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn)?;
    Ok(conn)
}

/// Opens the index read-only; `None` when there is no index yet.
pub(crate) fn open_read_only(path: &Path) -> rusqlite::Result<Option<Connection>> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(Some(conn))
}

fn migrate(conn: &Connection) -> Result<(), OpenError> {
    let version = schema_version(conn)?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::TooNew(version));
    }
    if version < SCHEMA_VERSION {
        let tx = conn.unchecked_transaction()?;
        if version < 1 {
            tx.execute_batch(&schema_v1())?;
        }
        if version < 2 {
            tx.execute_batch(SCHEMA_V2)?;
        }
        if version < 3 {
            tx.execute_batch(SCHEMA_V3)?;
        }
        if version < 4 {
            tx.execute_batch(SCHEMA_V4)?;
        }
        if version < 5 {
            tx.execute_batch(&schema_v5())?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}

/// The index's schema version (`PRAGMA user_version`); 0 for a new file.
pub(crate) fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// `PRAGMA quick_check` passes.
pub(crate) fn is_healthy(conn: &Connection) -> bool {
    conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        .is_ok_and(|s| s == "ok")
}

/// Where a recipient's mail goes, as the queue owner's routing decides it for a domain
/// (the spool only stores it): its route (whose online clock ages it), its lane, and
/// whether it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub route: String,
    pub lane: String,
    pub wait: Option<Wait>,
}

/// Why newly placed mail is not due at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A hold route keeps it (`held`) until a flush or ETRN names its domain.
    Held(String),
    /// Its route's gate is closed: it waits for it to open (`link_wait`).
    Link(String),
}

/// The routing decision for a domain, given to the spool by the queue owner.
pub type Place = dyn Fn(&str) -> Placement + Send + Sync;

/// Per-recipient state carried over from an older index when rebuilding.
#[derive(Clone, Debug)]
pub struct CarriedState {
    pub state: RecipientState,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub online_age: i64,
    pub last_reply: Option<String>,
    pub last_host: Option<String>,
    /// The delay notice went out.
    pub warned: bool,
}

/// Indexes a committed message. Each recipient is placed by `place` (unplaced with
/// `None`: the daemon places it at start), `queued` and due now unless its placement
/// makes it wait; `carried` state from an older index wins over both. Returns the lanes
/// with mail due now.
pub fn insert_message(
    tx: &Connection,
    stored: &StoredMessage,
    now: i64,
    place: Option<&Place>,
    carried: &dyn Fn(usize, &str) -> Option<CarriedState>,
) -> rusqlite::Result<Vec<String>> {
    let e = &stored.envelope;
    debug_assert!(check_envelope(e).is_ok());
    tx.prepare_cached(
        "INSERT INTO message (id, sender, size, eight_bit, received_at, drop_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.id.as_str(),
        e.sender.to_string(),
        stored.content_size() as i64,
        stored.trailer.eight_bit,
        e.received_at,
        e.origin.drop,
    ])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO recipient (message_id, position, address, domain, state, attempts,
             next_attempt_at, online_age, last_reply, last_host, updated_at, warned,
             route, lane, link_wait, online_mark)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
             COALESCE((SELECT online_secs FROM route_clock WHERE route = ?13), 0))",
    )?;
    let mut placed: Option<(String, Placement)> = None;
    let mut due_lanes = Vec::new();
    for (position, r) in e.recipients.iter().enumerate() {
        let address = r.address.to_string();
        let domain = r.address.domain().to_ascii_lowercase();
        let placement = match (place, &placed) {
            (None, _) => None,
            (Some(_), Some((d, p))) if *d == domain => Some(p.clone()),
            (Some(f), _) => {
                let p = f(&domain);
                placed = Some((domain.clone(), p.clone()));
                Some(p)
            }
        };
        let (state, next, reply, link_wait) = match placement.as_ref().and_then(|p| p.wait.as_ref())
        {
            None => (RecipientState::Queued, Some(now), None, false),
            Some(Wait::Held(reply)) => (RecipientState::Held, None, Some(reply.clone()), false),
            Some(Wait::Link(reply)) => (RecipientState::Queued, None, Some(reply.clone()), true),
        };
        let c = carried(position, &address).unwrap_or(CarriedState {
            state,
            attempts: 0,
            next_attempt_at: next,
            online_age: 0,
            last_reply: reply,
            last_host: None,
            warned: false,
        });
        let waits_for_time = matches!(c.state, RecipientState::Queued | RecipientState::Deferred);
        let link_wait = link_wait && waits_for_time;
        let next = if waits_for_time && !link_wait {
            Some(c.next_attempt_at.unwrap_or(now))
        } else {
            None
        };
        insert.execute(params![
            e.id.as_str(),
            position as i64,
            address,
            domain,
            c.state.as_str(),
            c.attempts,
            next,
            c.online_age,
            c.last_reply,
            c.last_host,
            now,
            c.warned,
            placement.as_ref().map(|p| p.route.as_str()),
            placement.as_ref().map(|p| p.lane.as_str()),
            link_wait,
        ])?;
        if let (Some(p), Some(at)) = (&placement, next)
            && at <= now
            && !due_lanes.contains(&p.lane)
        {
            due_lanes.push(p.lane.clone());
        }
    }
    if let Some(b) = &e.origin.bundle {
        let mut remember = tx.prepare_cached(
            "INSERT OR IGNORE INTO imported (node, message, position, queue_id, imported_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for position in &b.positions {
            remember.execute(params![
                b.node,
                b.message,
                *position as i64,
                e.id.as_str(),
                now
            ])?;
        }
    }
    Ok(due_lanes)
}

/// Reads a recipient's state from an index (used to carry state into a rebuilt index),
/// of this schema version or the ones before. The online age carried is the age reached.
pub(crate) fn carried_state(
    conn: &Connection,
    id: QueueId,
    position: usize,
    address: &str,
) -> rusqlite::Result<Option<CarriedState>> {
    let v2 = schema_version(conn)? >= 2;
    let sql = if v2 {
        format!(
            "SELECT r.state, r.attempts, r.next_attempt_at, {ONLINE_AGE_SQL}, r.last_reply,
                    r.last_host, r.warned
             FROM recipient r LEFT JOIN route_clock c ON c.route = r.route
             WHERE r.message_id = ?1 AND r.position = ?2 AND r.address = ?3"
        )
    } else {
        "SELECT r.state, r.attempts, r.next_attempt_at, r.online_age, r.last_reply,
                r.last_host, 0
         FROM recipient r WHERE r.message_id = ?1 AND r.position = ?2 AND r.address = ?3"
            .to_owned()
    };
    conn.prepare_cached(&sql)?
        .query_row(params![id.as_str(), position as i64, address], |r| {
            let state =
                RecipientState::parse(&r.get::<_, String>(0)?).unwrap_or(RecipientState::Queued);
            Ok(CarriedState {
                // A claim of the old index is void: the delivery holding it is gone.
                // So is a bundle's wait for its receipt: the mail goes again, and the
                // peer takes it once.
                state: match state {
                    RecipientState::InFlight | RecipientState::Bundled => RecipientState::Deferred,
                    other => other,
                },
                attempts: r.get(1)?,
                next_attempt_at: r.get(2)?,
                online_age: r.get(3)?,
                last_reply: r.get(4)?,
                last_host: r.get(5)?,
                warned: r.get(6)?,
            })
        })
        .optional()
}

/// Every indexed id (16 bytes each: a 100k queue costs a few MiB here, not the queue).
pub(crate) fn message_ids(conn: &Connection) -> rusqlite::Result<HashSet<QueueId>> {
    let mut stmt = conn.prepare("SELECT id FROM message")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut ids = HashSet::new();
    for id in rows {
        // Every row we write has a valid id; a hand-edited one could name no file.
        if let Ok(id) = QueueId::parse(&id?) {
            ids.insert(id);
        }
    }
    Ok(ids)
}

pub fn contains(conn: &Connection, id: QueueId) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM message WHERE id = ?1")?
        .exists([id.as_str()])
}

pub fn has_drop(conn: &Connection, drop_name: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM message WHERE drop_name = ?1")?
        .exists([drop_name])?
        || conn
            .prepare_cached("SELECT 1 FROM finished_drop WHERE drop_name = ?1")?
            .exists([drop_name])?)
}

/// How long a finished message's drop name is remembered: far longer than any pickup
/// takes to unlink a drop it has committed.
pub const FINISHED_DROP_KEPT: i64 = 2 * 86400;

/// Forgets finished drop names older than `FINISHED_DROP_KEPT` (recovery, at start).
pub(crate) fn prune_finished_drops(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM finished_drop WHERE finished_at < ?1",
        [now - FINISHED_DROP_KEPT],
    )
}

/// Messages whose every recipient is in a final state: ready to leave the spool.
pub(crate) fn finished_messages(conn: &Connection) -> rusqlite::Result<Vec<QueueId>> {
    let sql = format!(
        "SELECT id FROM message m WHERE NOT m.kept AND NOT EXISTS (SELECT 1 FROM recipient r
         WHERE r.message_id = m.id AND r.state IN ({}))",
        RecipientState::sql_list(RecipientState::PENDING)
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.filter_map(|id| id.map(|id| QueueId::parse(&id).ok()).transpose())
        .collect()
}

/// `id` is indexed, not kept, and every recipient of it is in a final state: one message
/// looked at, for the hot path of recording outcomes (`finished_messages` scans them all).
pub(crate) fn is_finished(conn: &Connection, id: QueueId) -> rusqlite::Result<bool> {
    let sql = format!(
        "SELECT 1 FROM recipient WHERE message_id = ?1 AND state IN ({}) LIMIT 1",
        RecipientState::sql_list(RecipientState::PENDING)
    );
    let waiting = conn.prepare_cached(&sql)?.exists([id.as_str()])?;
    let removable = conn
        .prepare_cached("SELECT 1 FROM message WHERE id = ?1 AND NOT kept")?
        .exists([id.as_str()])?;
    Ok(!waiting && removable)
}

/// Keeps `id` in the queue although every recipient of it is final: a notice nobody
/// could receive, left for the operator.
pub(crate) fn keep_message(conn: &Connection, id: QueueId) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE message SET kept = 1 WHERE id = ?1")?
        .execute([id.as_str()])?;
    Ok(())
}

/// Every `in_flight` recipient becomes `deferred` and due now (recovery after a stop).
pub(crate) fn reset_in_flight(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE recipient SET state = 'deferred', next_attempt_at = ?1, updated_at = ?1
         WHERE state = 'in_flight'",
        [now],
    )
}

/// Removes a message's rows; a maildrop name it came from is remembered (`has_drop`).
pub(crate) fn delete_message(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO finished_drop (drop_name, finished_at)
         SELECT drop_name, unixepoch() FROM message WHERE id = ?1 AND drop_name IS NOT NULL",
    )?
    .execute([id])?;
    tx.prepare_cached("DELETE FROM message WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// A number kept in `meta` (the journal's generation and applied length).
pub(crate) fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

pub fn set_meta(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = ?2",
    )?
    .execute(params![key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_index_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&schema_v1()).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO message VALUES ('0000000000000001', 'a@x.example', 10, 0, 1000, NULL);
                 INSERT INTO recipient (message_id, position, address, domain, state, attempts,
                     next_attempt_at, online_age, updated_at)
                 VALUES ('0000000000000001', 0, 'b@y.example', 'y.example', 'deferred', 3, 2000, 77, 1000);
                 INSERT INTO recipient (message_id, position, address, domain, state, attempts,
                     next_attempt_at, online_age, updated_at)
                 VALUES ('0000000000000001', 1, 'c@y.example', 'y.example', 'held', 0, 2000, 0, 1000);",
            )
            .unwrap();
        }
        let reader = open_read_only(&path).unwrap().unwrap();
        assert_eq!(schema_version(&reader).unwrap(), 1);
        drop(reader);
        let conn = open_writer(&path).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
        let rows: Vec<(i64, i64, i64, Option<i64>)> = conn
            .prepare(&format!(
                "SELECT r.attempts, {ONLINE_AGE_SQL}, r.link_wait, r.next_attempt_at FROM recipient r
                 LEFT JOIN route_clock c ON c.route = r.route ORDER BY r.position"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [(3, 77, 0, Some(2000)), (0, 0, 0, None)],
            "state kept, new columns empty, a held recipient is due at no time"
        );
    }
}
