//! Queue entries for `ferrymail queue` / `mailq`: read from the index on a read-only
//! connection in one ordered query, grouped message by message as rows stream past, so
//! listing a 100k-message queue holds one message at a time.

use std::io;

use rusqlite::Connection;
use serde::Serialize;

use crate::spool::maildrop::{is_drop_name, open_drop};
use crate::spool::{Fs, Layout};

/// One message, as DESIGN §7's `--json` describes it.
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecipientEntry {
    pub address: String,
    /// A `RecipientState` name; `None` for drops (no state until picked up).
    pub state: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    /// Seconds queued while the link was up (counts toward expiry).
    pub online_age: i64,
    pub last_reply: Option<String>,
    pub last_host: Option<String>,
    /// Waiting for its route's link gate to open (then due at once).
    pub link_wait: bool,
}

/// Calls `f` for each queued message, oldest first. `only` restricts to one id.
pub fn for_each_entry(
    conn: &Connection,
    only: Option<&str>,
    mut f: impl FnMut(QueueEntry) -> io::Result<()>,
) -> Result<(), ListError> {
    // An index the daemon has not migrated yet (version 1) has no route clocks.
    let (age, link_wait, clocks) = if crate::spool::index::schema_version(conn)? >= 2 {
        (
            crate::spool::index::ONLINE_AGE_SQL,
            "r.link_wait",
            "LEFT JOIN route_clock c ON c.route = r.route",
        )
    } else {
        ("r.online_age", "0", "")
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT m.id, m.sender, m.size, m.received_at, r.address, r.state, r.attempts,
                r.next_attempt_at, {age}, r.last_reply, r.last_host, {link_wait}
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

/// Drops in `maildrop/new` not yet picked up. Unreadable ones (another user's, or
/// damaged) are skipped: the daemon deals with those.
pub fn maildrop_entries(fs: &dyn Fs, layout: &Layout) -> Vec<QueueEntry> {
    let Ok(mut names) = fs.list_dir(&layout.maildrop_new) else {
        return Vec::new();
    };
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if !is_drop_name(&name) {
            continue;
        }
        let path = layout.maildrop_new.join(&name);
        let (Ok(drop), Ok(len)) = (open_drop(fs, &path), fs.len(&path)) else {
            continue;
        };
        out.push(QueueEntry {
            id: None,
            location: "maildrop",
            sender: drop.envelope.sender,
            size: len.saturating_sub(drop.body_offset),
            received_at: drop.envelope.submitted_at,
            recipients: drop
                .envelope
                .recipients
                .into_iter()
                .map(|r| RecipientEntry {
                    address: r.address,
                    state: None,
                    attempts: 0,
                    next_attempt_at: None,
                    online_age: 0,
                    last_reply: None,
                    last_host: None,
                    link_wait: false,
                })
                .collect(),
            file: Some(name),
        });
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("reading the index: {0}")]
    Index(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}
