//! Start-up recovery (spool/README.md) and index rebuilding. Recovery makes the index agree
//! with `queue/` and the outcome journal: drafts in `tmp/` are removed, committed files
//! without rows are indexed, the journal's facts the index lacks are applied, a notice
//! whose transaction never committed is removed (its bounce was not recorded either, and
//! will be reported again), damaged files and rows of pending mail without a file go to
//! `corrupt/` (loudly), `in_flight` recipients become due, and finished messages leave
//! the spool.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::claims;
use super::envelope::{StoredMessage, read_stored};
use super::fs::Fs;
use super::id::QueueId;
use super::index::{self, CarriedState};
use super::journal::Journal;
use super::layout::Layout;
use super::removal::{free_name, quarantine_file, remove_messages};
use super::{SpoolError, now_unix};

/// A journal longer than this is rewritten at start.
const REWRITE_AT_START: u64 = 1 << 20;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryReport {
    /// Why the index was rebuilt from the files, if it was.
    pub index_rebuilt: Option<String>,
    pub drafts_removed: usize,
    pub reindexed: usize,
    pub quarantined_files: usize,
    pub quarantined_rows: usize,
    pub in_flight_reset: usize,
    /// Recipients whose outcome the index lacked and the journal had.
    #[serde(default)]
    pub journal_applied: usize,
    /// Notices found without their row whose outcomes were never recorded: removed,
    /// to be sent again when the outcome is.
    #[serde(default)]
    pub notices_dropped: usize,
    pub finished_removed: usize,
}

impl RecoveryReport {
    /// A spool used for the first time: no index yet, and nothing in `queue/`.
    fn is_new_spool(&self) -> bool {
        self.index_rebuilt.as_deref() == Some(INDEX_MISSING)
            && *self
                == (RecoveryReport {
                    index_rebuilt: self.index_rebuilt.clone(),
                    ..RecoveryReport::default()
                })
    }

    /// Whether recovery found anything to mend.
    pub(crate) fn repaired(&self) -> bool {
        *self != RecoveryReport::default() && !self.is_new_spool()
    }
}

/// What recovery did, for the log: "nothing to repair", or each thing it mended.
impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_new_spool() {
            return f.write_str("a new spool");
        }
        let mut parts = Vec::new();
        if let Some(why) = &self.index_rebuilt {
            parts.push(format!("index rebuilt from the files ({why})"));
        }
        for (n, what) in [
            (self.drafts_removed, "unfinished draft(s) removed"),
            (self.reindexed, "message(s) indexed from their files"),
            (self.quarantined_files, "damaged file(s) moved to corrupt/"),
            (
                self.quarantined_rows,
                "index row(s) without a file moved to corrupt/",
            ),
            (self.in_flight_reset, "interrupted delivery(ies) due again"),
            (self.journal_applied, "outcome(s) restored from the journal"),
            (
                self.notices_dropped,
                "notice(s) of unrecorded outcomes removed",
            ),
            (self.finished_removed, "finished message(s) removed"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if parts.is_empty() {
            f.write_str("nothing to repair")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Why the index is built anew when there is none.
const INDEX_MISSING: &str = "index missing";

/// Opens the index, replacing it with an empty one when missing or damaged (recovery
/// then fills it from `queue/`).
pub(crate) fn open_index(layout: &Layout) -> Result<(Connection, Option<String>), SpoolError> {
    if !layout.index.exists() {
        return Ok((
            index::open_writer(&layout.index)?,
            Some(INDEX_MISSING.into()),
        ));
    }
    match index::open_writer(&layout.index) {
        Ok(conn) if index::is_healthy(&conn) => Ok((conn, None)),
        Err(too_new @ index::OpenError::TooNew(_)) => Err(too_new.into()),
        opened => {
            drop(opened);
            let aside = set_aside(&layout.index, "corrupt")?;
            tracing::error!(moved_to = %aside, "index failed its integrity check; rebuilding from queue/");
            let conn = index::open_writer(&layout.index)?;
            Ok((conn, Some(format!("index damaged (moved to {aside})"))))
        }
    }
}

/// Renames the index and its WAL/SHM companions to `<index>.<tag>-<unix time>`.
fn set_aside(index: &Path, tag: &str) -> Result<String, SpoolError> {
    let aside = format!("{}.{tag}-{}", index.display(), now_unix());
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", index.display());
        if Path::new(&from).exists() {
            std::fs::rename(&from, format!("{aside}{suffix}"))
                .map_err(|e| SpoolError::io("set the old index aside", e))?;
        }
    }
    Ok(aside)
}

pub(crate) fn recover(
    fs: &Arc<dyn Fs>,
    layout: &Layout,
    conn: &mut Connection,
) -> Result<(Journal, RecoveryReport), SpoolError> {
    let mut report = RecoveryReport::default();
    let now = now_unix();
    let fs_ref = fs.as_ref();
    for dir in layout.dirs() {
        fs.create_dir_all(dir)
            .map_err(|e| SpoolError::io("create spool directory", e))?;
    }

    for name in fs
        .list_dir(&layout.tmp)
        .map_err(|e| SpoolError::io("list tmp/", e))?
    {
        let _ = fs.remove_file(&layout.tmp.join(&name));
        report.drafts_removed += 1;
    }

    let indexed = index::message_ids(conn)?;
    let names = fs
        .list_dir(&layout.queue)
        .map_err(|e| SpoolError::io("list queue/", e))?;
    let mut on_disk = HashSet::with_capacity(names.len());
    let mut notices = Vec::new();
    let tx = conn.transaction()?;
    for name in names {
        let text = name.to_string_lossy().into_owned();
        let path = layout.queue.join(&name);
        let id = match QueueId::parse(&text) {
            Ok(id) if id.as_str() == text => id,
            _ => {
                quarantine_file(fs_ref, layout, &path, &text, "not a queue id")?;
                report.quarantined_files += 1;
                continue;
            }
        };
        on_disk.insert(id);
        if indexed.contains(&id) {
            continue;
        }
        match read_stored(fs_ref, &path) {
            Ok(stored) if stored.envelope.id == id && stored.envelope.origin.about.is_some() => {
                // Decided once the journal has been replayed.
                notices.push(stored);
            }
            Ok(stored) if stored.envelope.id == id => {
                index::insert_message(&tx, &stored, now, None, &|_, _| None)?;
                tracing::warn!(id = %id, "queued (re-indexed from its spool file)");
                report.reindexed += 1;
            }
            Ok(_) => {
                on_disk.remove(&id);
                quarantine_file(
                    fs_ref,
                    layout,
                    &path,
                    &text,
                    "envelope id differs from file name",
                )?;
                report.quarantined_files += 1;
            }
            Err(e) => {
                on_disk.remove(&id);
                quarantine_file(fs_ref, layout, &path, &text, &e.to_string())?;
                report.quarantined_files += 1;
            }
        }
    }
    tx.commit()?;

    let mut journal = Journal::open(fs.clone(), &layout.journal)?;
    report.journal_applied = journal.replay(conn)?;
    let (queued, dropped) = settle_notices(fs_ref, layout, conn, notices, now)?;
    report.notices_dropped = dropped.len();
    report.reindexed += queued.len();
    report.journal_applied += journal.replay_only(conn, &queued)?;
    for id in &dropped {
        on_disk.remove(id);
    }

    let orphans: Vec<QueueId> = indexed.difference(&on_disk).copied().collect();
    let finished: HashSet<QueueId> = index::finished_messages(conn)?.into_iter().collect();
    let tx = conn.transaction()?;
    for id in &orphans {
        if !finished.contains(id) {
            quarantine_rows(fs_ref, layout, &tx, id.as_str())?;
            report.quarantined_rows += 1;
        }
        index::delete_message(&tx, id.as_str())?;
    }
    report.in_flight_reset = index::reset_in_flight(&tx, now)?;
    index::prune_finished_drops(&tx, now)?;
    super::bundles::prune_imported(&tx, now - super::bundles::IMPORT_MEMORY_SECS as i64)?;
    tx.commit()?;

    let finished = index::finished_messages(conn)?;
    remove_messages(fs_ref, layout, conn, &finished)?;
    report.finished_removed = finished.len();
    if journal.len() > REWRITE_AT_START {
        journal.rewrite(conn)?;
    }
    Ok((journal, report))
}

/// Notices found in `queue/` without a row: indexed when the outcomes they report are
/// recorded, removed otherwise (their transaction never committed). Returns the queued
/// and the removed.
fn settle_notices(
    fs: &dyn Fs,
    layout: &Layout,
    conn: &mut Connection,
    notices: Vec<StoredMessage>,
    now: i64,
) -> Result<(HashSet<QueueId>, Vec<QueueId>), SpoolError> {
    let (mut queued, mut dropped) = (HashSet::new(), Vec::new());
    let tx = conn.transaction()?;
    for stored in notices {
        let id = stored.envelope.id;
        let about = stored.envelope.origin.about.as_ref().expect("a notice");
        if claims::reported(&tx, about)? {
            index::insert_message(&tx, &stored, now, None, &|_, _| None)?;
            tracing::warn!(id = %id, about = %about.id, "notice queued (re-indexed from its spool file)");
            queued.insert(id);
        } else {
            match fs.remove_file(&layout.message_path(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("remove an unrecorded notice", e)),
            }
            tracing::info!(id = %id, about = %about.id, "notice removed: the outcome it reports was never recorded");
            dropped.push(id);
        }
    }
    tx.commit()?;
    if !dropped.is_empty() {
        fs.sync_dir(&layout.queue)
            .map_err(|e| SpoolError::io("fsync queue directory", e))?;
    }
    Ok((queued, dropped))
}

/// Rows of pending mail whose file is gone: their content is lost, so say so loudly and
/// keep what the index knew in `corrupt/<id>.index.json` for the operator.
fn quarantine_rows(
    fs: &dyn Fs,
    layout: &Layout,
    tx: &rusqlite::Transaction<'_>,
    id: &str,
) -> Result<(), SpoolError> {
    let mut stmt = tx.prepare(
        "SELECT m.sender, m.received_at, r.address, r.state FROM message m
         JOIN recipient r ON r.message_id = m.id WHERE m.id = ?1 ORDER BY r.position",
    )?;
    let rows: Vec<serde_json::Value> = stmt
        .query_map([id], |r| {
            Ok(serde_json::json!({
                "sender": r.get::<_, String>(0)?,
                "received_at": r.get::<_, i64>(1)?,
                "address": r.get::<_, String>(2)?,
                "state": r.get::<_, String>(3)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    let record = serde_json::json!({ "id": id, "reason": "indexed but its spool file is missing", "recipients": rows });
    let target = free_name(fs, &layout.corrupt, &format!("{id}.index.json"))?;
    tracing::error!(id, moved_to = %target.display(), "message file missing for pending recipients; index rows quarantined");
    let mut file = fs
        .create_new(&target)
        .map_err(|e| SpoolError::io("write corrupt/ record", e))?;
    file.write_all(record.to_string().as_bytes())
        .and_then(|()| file.sync())
        .and_then(|()| fs.sync_dir(&layout.corrupt))
        .map_err(|e| SpoolError::io("write corrupt/ record", e))
}

/// Rebuilds the index from `queue/`, carrying each recipient's state over from the old
/// index when it can be read. The old index is set aside first, so a crash midway
/// leaves a valid (partial) index that the next start-up completes.
pub(crate) fn rebuild_index(fs: &dyn Fs, layout: &Layout) -> Result<usize, SpoolError> {
    let aside = if layout.index.exists() {
        Some(set_aside(&layout.index, "old")?)
    } else {
        None
    };
    let old = aside
        .as_ref()
        .and_then(|p| index::open_read_only(Path::new(p)).ok().flatten())
        .filter(index::is_healthy);
    let mut conn = index::open_writer(&layout.index)?;
    let now = now_unix();
    let mut count = 0;
    let tx = conn.transaction()?;
    for name in fs
        .list_dir(&layout.queue)
        .map_err(|e| SpoolError::io("list queue/", e))?
    {
        let path = layout.queue.join(&name);
        let Ok(stored) = read_stored(fs, &path) else {
            continue; // left for recovery to quarantine, with its reason
        };
        if stored.envelope.id.as_str() != name.to_string_lossy()
            || stored.envelope.origin.about.is_some()
        {
            // Notices are left to recovery, which keeps them only when what they report
            // was recorded.
            continue;
        }
        let id = stored.envelope.id;
        let carried = |position: usize, address: &str| -> Option<CarriedState> {
            let conn = old.as_ref()?;
            index::carried_state(conn, id, position, address)
                .ok()
                .flatten()
        };
        index::insert_message(&tx, &stored, now, None, &carried)?;
        count += 1;
    }
    tx.commit()?;
    drop(old);
    if let Some(aside) = aside {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{aside}{suffix}"));
        }
    }
    Ok(count)
}
