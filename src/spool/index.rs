//! The SQLite index of the queue: one row per message, one per recipient, holding all
//! per-recipient state. It is derived from `queue/` (every row's file exists; rebuilt by
//! reindex), opened in WAL with `synchronous=FULL` so a commit is durable when it returns.
//! Writes happen only on the writer thread; readers open their own read-only connection.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::envelope::{StoredMessage, check_envelope};
use super::id::QueueId;
use super::state::RecipientState;

/// Schema version, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 2;

fn schema_v1() -> String {
    let states: Vec<String> = RecipientState::ALL
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
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
            state TEXT NOT NULL CHECK (state IN ({states})),
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
        states = states.join(",")
    )
}

/// Version 2: the online-age clock and waiting for the link (DESIGN §1.4). A recipient
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

/// Opens the index read-only (for the CLI); `None` when there is no index yet.
pub fn open_reader(path: &Path) -> rusqlite::Result<Option<Connection>> {
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
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}

/// The index's schema version (`PRAGMA user_version`); 0 for a new file.
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// `PRAGMA quick_check` passes.
pub fn is_healthy(conn: &Connection) -> bool {
    conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        .is_ok_and(|s| s == "ok")
}

/// The domain part, lower-cased, as routes and ETRN match it.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase()
}

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

/// Indexes a committed message, every recipient `queued` and due now (or as carried).
pub fn insert_message(
    tx: &Transaction<'_>,
    stored: &StoredMessage,
    now: i64,
    carried: &dyn Fn(usize, &str) -> Option<CarriedState>,
) -> rusqlite::Result<()> {
    let e = &stored.envelope;
    debug_assert!(check_envelope(e).is_ok());
    tx.prepare_cached(
        "INSERT INTO message (id, sender, size, eight_bit, received_at, drop_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.id.as_str(),
        e.sender,
        stored.trailer.size as i64,
        stored.trailer.eight_bit,
        e.received_at,
        e.origin.drop,
    ])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO recipient (message_id, position, address, domain, state, attempts,
             next_attempt_at, online_age, last_reply, last_host, updated_at, warned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (position, r) in e.recipients.iter().enumerate() {
        let c = carried(position, &r.address).unwrap_or(CarriedState {
            state: RecipientState::Queued,
            attempts: 0,
            next_attempt_at: Some(now),
            online_age: 0,
            last_reply: None,
            last_host: None,
            warned: false,
        });
        insert.execute(params![
            e.id.as_str(),
            position as i64,
            r.address,
            domain_of(&r.address),
            c.state.as_str(),
            c.attempts,
            c.next_attempt_at,
            c.online_age,
            c.last_reply,
            c.last_host,
            now,
            c.warned,
        ])?;
    }
    Ok(())
}

/// Reads a recipient's state from an index (used to carry state into a rebuilt index),
/// of this schema version or the one before. The online age carried is the age reached.
pub fn carried_state(
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
            Ok(CarriedState {
                state: RecipientState::parse(&r.get::<_, String>(0)?)
                    .unwrap_or(RecipientState::Queued),
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
pub fn message_ids(conn: &Connection) -> rusqlite::Result<HashSet<QueueId>> {
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
pub fn prune_finished_drops(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM finished_drop WHERE finished_at < ?1",
        [now - FINISHED_DROP_KEPT],
    )
}

/// Messages whose every recipient is in a final state: ready to leave the spool.
pub fn finished_messages(conn: &Connection) -> rusqlite::Result<Vec<QueueId>> {
    let finals: Vec<String> = RecipientState::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    let sql = format!(
        "SELECT id FROM message m WHERE NOT EXISTS (SELECT 1 FROM recipient r
         WHERE r.message_id = m.id AND r.state NOT IN ({}))",
        finals.join(",")
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.filter_map(|id| id.map(|id| QueueId::parse(&id).ok()).transpose())
        .collect()
}

/// `id` is indexed and every recipient of it is in a final state: one message looked at,
/// for the hot path of recording outcomes (`finished_messages` scans them all).
pub fn is_finished(conn: &Connection, id: QueueId) -> rusqlite::Result<bool> {
    let pending: Vec<String> = RecipientState::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    let sql = format!(
        "SELECT 1 FROM recipient WHERE message_id = ?1 AND state IN ({}) LIMIT 1",
        pending.join(",")
    );
    let waiting = conn.prepare_cached(&sql)?.exists([id.as_str()])?;
    Ok(!waiting && contains(conn, id)?)
}

/// Every `in_flight` recipient becomes `deferred` and due now (recovery after a stop).
pub fn reset_in_flight(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE recipient SET state = 'deferred', next_attempt_at = ?1, updated_at = ?1
         WHERE state = 'in_flight'",
        [now],
    )
}

/// Mail waiting for a route's link (every route's with `None`) becomes due now: the gate
/// opened, or the daemon starts and does not know the link yet. Returns how many.
pub fn release_link_wait(
    conn: &Connection,
    route: Option<&str>,
    now: i64,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE recipient SET link_wait = 0, next_attempt_at = ?1, updated_at = ?1
         WHERE link_wait = 1 AND (?2 IS NULL OR route = ?2)
           AND state IN ('queued', 'deferred')",
    )?
    .execute(params![now, route])
}

/// Removes a message's rows; a maildrop name it came from is remembered (`has_drop`).
pub fn delete_message(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO finished_drop (drop_name, finished_at)
         SELECT drop_name, unixepoch() FROM message WHERE id = ?1 AND drop_name IS NOT NULL",
    )?
    .execute([id])?;
    tx.prepare_cached("DELETE FROM message WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Sets `to` on the recipients of `id` whose state is one of `from`; returns how many.
pub fn transition(
    tx: &Transaction<'_>,
    id: QueueId,
    from: &[RecipientState],
    to: RecipientState,
    next_attempt_at: Option<i64>,
    now: i64,
) -> rusqlite::Result<usize> {
    let from: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let sql = format!(
        "UPDATE recipient SET state = ?1, next_attempt_at = COALESCE(?2, next_attempt_at),
             updated_at = ?3
         WHERE message_id = ?4 AND state IN ({})",
        from.join(",")
    );
    tx.prepare_cached(&sql)?
        .execute(params![to.as_str(), next_attempt_at, now, id.as_str()])
}

/// Ids of every message in the index, oldest first.
pub fn all_ids(conn: &Connection) -> rusqlite::Result<Vec<QueueId>> {
    let mut stmt = conn.prepare("SELECT id FROM message ORDER BY received_at, id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.filter_map(|id| id.map(|id| QueueId::parse(&id).ok()).transpose())
        .collect()
}

/// Recipients due now or in flight, and recipients deferred: what `flush --wait`
/// follows until the first is zero.
pub fn busy_and_deferred(conn: &Connection, now: i64) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(
        "SELECT
           COUNT(*) FILTER (WHERE state = 'in_flight'
               OR (state IN ('queued', 'deferred') AND next_attempt_at <= ?1)),
           COUNT(*) FILTER (WHERE state = 'deferred')
         FROM recipient",
        [now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Recipient counts by state.
pub fn count_by_state(conn: &Connection) -> rusqlite::Result<Vec<(RecipientState, i64)>> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM recipient GROUP BY state")?;
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
                 VALUES ('0000000000000001', 0, 'b@y.example', 'y.example', 'deferred', 3, 2000, 77, 1000);",
            )
            .unwrap();
        }
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(schema_version(&reader).unwrap(), 1);
        drop(reader);
        let conn = open_writer(&path).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
        let (attempts, age, link_wait): (i64, i64, i64) = conn
            .query_row(
                &format!(
                    "SELECT r.attempts, {ONLINE_AGE_SQL}, r.link_wait FROM recipient r
                     LEFT JOIN route_clock c ON c.route = r.route"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (attempts, age, link_wait),
            (3, 77, 0),
            "state kept, new columns empty"
        );
    }
}
