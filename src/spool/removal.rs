//! Taking messages out of `queue/`: removal once they are done or deleted (files first,
//! then one fsync of `queue/`, then their rows: a crash in between leaves rows without
//! files for finished work, which recovery drops quietly, never files without rows,
//! which it would queue again), and quarantine to `corrupt/` when a file is damaged
//! (renamed, never deleted, under a free name, both directories fsynced).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::SpoolError;
use super::fs::Fs;
use super::id::QueueId;
use super::index;
use super::layout::Layout;

/// Removes messages: files, one fsync of `queue/`, then rows.
pub(crate) fn remove_messages(
    fs: &dyn Fs,
    layout: &Layout,
    conn: &mut Connection,
    ids: &[QueueId],
) -> Result<(), SpoolError> {
    if ids.is_empty() {
        return Ok(());
    }
    for id in ids {
        match fs.remove_file(&layout.message_path(*id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove message file", e)),
        }
    }
    fs.sync_dir(&layout.queue)
        .map_err(|e| SpoolError::io("fsync queue directory", e))?;
    let tx = conn.transaction()?;
    for id in ids {
        index::delete_message(&tx, id.as_str())?;
    }
    tx.commit()?;
    Ok(())
}

/// Moves a damaged file to `corrupt/`, with its reason in the log.
pub(crate) fn quarantine_file(
    fs: &dyn Fs,
    layout: &Layout,
    path: &Path,
    name: &str,
    why: &str,
) -> Result<(), SpoolError> {
    let target = free_name(fs, &layout.corrupt, name)?;
    tracing::error!(file = %path.display(), moved_to = %target.display(), reason = why, "quarantined a damaged spool file");
    fs.rename(path, &target)
        .map_err(|e| SpoolError::io("move to corrupt/", e))?;
    fs.sync_dir(&layout.corrupt)
        .and_then(|()| fs.sync_dir(path.parent().unwrap_or(&layout.queue)))
        .map_err(|e| SpoolError::io("fsync after quarantine", e))
}

pub(crate) fn free_name(fs: &dyn Fs, dir: &Path, name: &str) -> Result<PathBuf, SpoolError> {
    let taken: HashSet<_> = fs
        .list_dir(dir)
        .map_err(|e| SpoolError::io("list corrupt/", e))?
        .into_iter()
        .collect();
    let mut candidate = name.to_owned();
    let mut n = 1;
    while taken.contains(std::ffi::OsStr::new(&candidate)) {
        candidate = format!("{name}.{n}");
        n += 1;
    }
    Ok(dir.join(candidate))
}
