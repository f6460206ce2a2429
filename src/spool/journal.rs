//! The outcome journal: an append-only file of the facts a rebuilt index must not
//! forget, because forgetting them sends mail twice or loses it: a recipient delivered,
//! bounced or expired, or warned by a delay notice; a message kept for the operator. The writer appends each group's
//! facts and fsyncs the journal before the index transaction that records them commits,
//! and keeps in the index how far the journal has been applied; recovery replays what
//! the index lacks (all of it when the index was rebuilt from `queue/`). Facts about
//! messages that have left the spool are dropped when the journal is rewritten, so it
//! stays near the size of what the queue holds. Format: spool/README.md.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, params};

use super::SpoolError;
use super::fs::{Fs, FsFile};
use super::id::QueueId;
use super::index;
use super::state::RecipientState;

const HEADER_PREFIX: &str = "ferrymail-journal 1 ";
/// `meta` keys: the generation of the journal the index follows, and its length applied.
const META_GENERATION: &str = "journal_generation";
const META_APPLIED: &str = "journal_applied";
/// The writer rewrites the journal once it is this long.
pub const REWRITE_AT: u64 = 16 << 20;

/// A fact about one recipient, or (`Kept`) about its whole message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// It reached a final state.
    Final(RecipientState),
    /// Its delay notice went out.
    Warned,
    /// The message stays for the operator although finished (a double bounce); the
    /// position is written as 0 and means nothing.
    Kept,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: QueueId,
    pub position: usize,
    pub fact: Fact,
}

impl Entry {
    fn line(&self) -> String {
        let fact = match self.fact {
            Fact::Final(state) => state.as_str(),
            Fact::Warned => "warned",
            Fact::Kept => "kept",
        };
        format!("{} {} {fact}\n", self.id, self.position)
    }

    fn parse(line: &str) -> Option<Entry> {
        let mut words = line.split(' ');
        let id = QueueId::parse(words.next()?).ok()?;
        let position = words.next()?.parse().ok()?;
        let fact = match words.next()? {
            "warned" => Fact::Warned,
            "kept" => Fact::Kept,
            other => Fact::Final(RecipientState::parse(other).filter(|s| s.is_final())?),
        };
        words
            .next()
            .is_none()
            .then_some(Entry { id, position, fact })
    }
}

pub struct Journal {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    dir: PathBuf,
    file: Box<dyn FsFile>,
    generation: i64,
    len: u64,
    /// An append failed: what reached the disk is unknown, so the journal is rewritten
    /// from the index before anything more is appended.
    broken: bool,
}

impl Journal {
    /// Opens the journal, creating an empty one of generation 1 when there is none.
    pub fn open(fs: Arc<dyn Fs>, path: &Path) -> Result<Journal, SpoolError> {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let generation = match read_header(fs.as_ref(), path) {
            Ok(Some((generation, _))) => generation,
            Ok(None) => return Journal::create(fs, path, &dir, 1, &[]),
            Err(e) => return Err(e),
        };
        let len = fs
            .len(path)
            .map_err(|e| SpoolError::io("read the journal", e))?;
        let mut file = fs
            .append(path)
            .map_err(|e| SpoolError::io("open the journal", e))?;
        let mut len = len;
        if !ends_with_newline(fs.as_ref(), path, len)? {
            // A line torn by a crash: end it, so the next entry starts a line of its own
            // (the torn one is ignored when read).
            file.write_all(b"\n")
                .and_then(|()| file.sync())
                .map_err(|e| SpoolError::io("append to the journal", e))?;
            len += 1;
        }
        Ok(Journal {
            fs,
            path: path.to_path_buf(),
            dir,
            file,
            generation,
            len,
            broken: false,
        })
    }

    /// Writes a new journal of `generation` holding `entries`, durably, in place of the
    /// old one.
    fn create(
        fs: Arc<dyn Fs>,
        path: &Path,
        dir: &Path,
        generation: i64,
        entries: &[Entry],
    ) -> Result<Journal, SpoolError> {
        let io = |e| SpoolError::io("write the journal", e);
        let fresh = path.with_extension("new");
        let _ = fs.remove_file(&fresh);
        let mut text = format!("{HEADER_PREFIX}{generation}\n");
        for e in entries {
            text.push_str(&e.line());
        }
        let mut file = fs.create_new(&fresh).map_err(io)?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync())
            .map_err(io)?;
        fs.rename(&fresh, path).map_err(io)?;
        fs.sync_dir(dir).map_err(io)?;
        Ok(Journal {
            file: fs.append(path).map_err(io)?,
            fs,
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            generation,
            len: text.len() as u64,
            broken: false,
        })
    }

    /// Appends `entries` and makes them durable. A failure leaves the journal to be
    /// rewritten (`needs_rewrite`); it is never retried in place.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), SpoolError> {
        if entries.is_empty() {
            return Ok(());
        }
        let text: String = entries.iter().map(Entry::line).collect();
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync());
        if let Err(e) = written {
            self.broken = true;
            return Err(SpoolError::io("append to the journal", e));
        }
        self.len += text.len() as u64;
        Ok(())
    }

    /// What was last appended may hold facts the index never recorded (its transaction
    /// failed): rewrite the journal from the index before the next append.
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// The journal must be rewritten before the next append: it failed, or it is long.
    pub(crate) fn needs_rewrite(&self) -> bool {
        self.broken || self.len >= REWRITE_AT
    }

    /// Rewrites the journal from the index: the facts about messages still queued, as a
    /// new generation. Records the new position in the index.
    pub fn rewrite(&mut self, conn: &Connection) -> Result<(), SpoolError> {
        let entries = facts_in(conn)?;
        *self = Journal::create(
            self.fs.clone(),
            &self.path,
            &self.dir,
            self.generation + 1,
            &entries,
        )?;
        self.mark_applied(conn)?;
        Ok(())
    }

    /// Records in the index that everything in the journal is applied (inside the
    /// transaction that applies the last of it).
    pub(crate) fn mark_applied(&self, conn: &Connection) -> rusqlite::Result<()> {
        index::set_meta(conn, META_GENERATION, self.generation)?;
        index::set_meta(conn, META_APPLIED, self.len as i64)
    }

    /// Applies to the index what the journal holds and the index does not yet: from
    /// where the index stopped, or all of it when the index follows another generation
    /// (it was rebuilt). Returns how many recipients changed.
    pub fn replay(&self, conn: &mut Connection) -> Result<usize, SpoolError> {
        let header_len = format!("{HEADER_PREFIX}{}\n", self.generation).len() as u64;
        let from = match (
            index::meta(conn, META_GENERATION)?,
            index::meta(conn, META_APPLIED)?,
        ) {
            (Some(g), Some(applied)) if g == self.generation => (applied as u64).max(header_len),
            _ => header_len,
        };
        let entries = read_entries(self.fs.as_ref(), &self.path, from)?;
        let tx = conn.transaction()?;
        let mut changed = 0;
        for e in &entries {
            changed += apply(&tx, e)?;
        }
        self.mark_applied(&tx)?;
        tx.commit()?;
        Ok(changed)
    }

    /// Applies every fact the journal holds about `ids`, from its start: for messages
    /// indexed after `replay` (notices recovery re-indexes once what they report is
    /// known). Returns how many facts changed the index.
    pub(crate) fn replay_only(
        &self,
        conn: &mut Connection,
        ids: &std::collections::HashSet<QueueId>,
    ) -> Result<usize, SpoolError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let header_len = format!("{HEADER_PREFIX}{}\n", self.generation).len() as u64;
        let entries = read_entries(self.fs.as_ref(), &self.path, header_len)?;
        let tx = conn.transaction()?;
        let mut changed = 0;
        for e in entries.iter().filter(|e| ids.contains(&e.id)) {
            changed += apply(&tx, e)?;
        }
        tx.commit()?;
        Ok(changed)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The generation and header length of the journal at `path`; `None` when there is none.
fn read_header(fs: &dyn Fs, path: &Path) -> Result<Option<(i64, u64)>, SpoolError> {
    let file = match fs.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpoolError::io("read the journal", e)),
    };
    let mut line = String::new();
    BufReader::new(file.take(128))
        .read_line(&mut line)
        .map_err(|e| SpoolError::io("read the journal", e))?;
    let generation = line
        .strip_prefix(HEADER_PREFIX)
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|n| n.parse().ok());
    match generation {
        Some(g) => Ok(Some((g, line.len() as u64))),
        // A journal cut short while it was first written holds nothing yet.
        None => Ok(None),
    }
}

fn ends_with_newline(fs: &dyn Fs, path: &Path, len: u64) -> Result<bool, SpoolError> {
    let io = |e| SpoolError::io("read the journal", e);
    let mut file = fs.open(path).map_err(io)?;
    file.seek(SeekFrom::Start(len.saturating_sub(1)))
        .map_err(io)?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last).map_err(io)?;
    Ok(last[0] == b'\n')
}

/// The entries from byte `from` on; a last line cut short by a crash is ignored.
fn read_entries(fs: &dyn Fs, path: &Path, from: u64) -> Result<Vec<Entry>, SpoolError> {
    let io = |e| SpoolError::io("read the journal", e);
    let mut file = fs.open(path).map_err(io)?;
    file.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut out = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(io)?;
        match std::str::from_utf8(&line).ok().and_then(Entry::parse) {
            Some(e) => out.push(e),
            None => tracing::warn!(
                journal = %path.display(),
                "ignoring a damaged journal line"
            ),
        }
    }
    Ok(out)
}

/// Applies one fact; returns 1 if it changed the index.
fn apply(conn: &Connection, e: &Entry) -> rusqlite::Result<usize> {
    match e.fact {
        Fact::Final(state) => conn
            .prepare_cached(&format!(
                "UPDATE recipient SET state = ?1, next_attempt_at = NULL, link_wait = 0
                 WHERE message_id = ?2 AND position = ?3 AND state IN ({})",
                RecipientState::sql_list(RecipientState::PENDING)
            ))?
            .execute(params![state.as_str(), e.id.as_str(), e.position as i64]),
        Fact::Warned => conn
            .prepare_cached(
                "UPDATE recipient SET warned = 1
                 WHERE message_id = ?1 AND position = ?2 AND warned = 0",
            )?
            .execute(params![e.id.as_str(), e.position as i64]),
        Fact::Kept => conn
            .prepare_cached("UPDATE message SET kept = 1 WHERE id = ?1 AND NOT kept")?
            .execute([e.id.as_str()]),
    }
}

/// Every fact the index holds about the messages still queued.
fn facts_in(conn: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT message_id, position, state, warned FROM recipient
         WHERE state IN ({}) OR warned = 1",
        RecipientState::sql_list(RecipientState::FINAL)
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, position, state, warned) = row?;
        let (Ok(id), Some(state)) = (QueueId::parse(&id), RecipientState::parse(&state)) else {
            continue;
        };
        let position = position as usize;
        if warned {
            out.push(Entry {
                id,
                position,
                fact: Fact::Warned,
            });
        }
        if state.is_final() {
            out.push(Entry {
                id,
                position,
                fact: Fact::Final(state),
            });
        }
    }
    let mut kept = conn.prepare("SELECT id FROM message WHERE kept")?;
    for id in kept.query_map([], |r| r.get::<_, String>(0))? {
        if let Ok(id) = QueueId::parse(&id?) {
            out.push(Entry {
                id,
                position: 0,
                fact: Fact::Kept,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::simfs::SimFs;

    fn entry(n: usize, fact: Fact) -> Entry {
        Entry {
            id: QueueId::parse("0000000000000001").unwrap(),
            position: n,
            fact,
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_refused() {
        for e in [
            entry(0, Fact::Final(RecipientState::Delivered)),
            entry(7, Fact::Final(RecipientState::Expired)),
            entry(2, Fact::Warned),
            entry(0, Fact::Kept),
        ] {
            let line = e.line();
            assert_eq!(Entry::parse(line.trim_end_matches('\n')), Some(e));
        }
        for bad in [
            "0000000000000001 0 queued",
            "0000000000000001 x delivered",
            "0000000000000001 0",
            "../etc 0 delivered",
            "0000000000000001 0 delivered extra",
        ] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn appended_entries_survive_only_once_synced() {
        let fs = SimFs::new();
        let dir = Path::new("/spool");
        fs.create_dir_all(dir).unwrap();
        let path = dir.join("journal");
        let mut journal = Journal::open(Arc::new(fs.clone()), &path).unwrap();
        journal
            .append(&[entry(0, Fact::Final(RecipientState::Delivered))])
            .unwrap();
        let image = fs.crash_image(fs.ops());
        let header = format!("{HEADER_PREFIX}1\n").len() as u64;
        assert_eq!(
            read_entries(&image, &path, header).unwrap(),
            [entry(0, Fact::Final(RecipientState::Delivered))]
        );
        // A torn last line is ignored, and the next entry starts a line of its own.
        let mut f = fs.append(&path).unwrap();
        f.write_all(b"0000000000000001 1 deliv").unwrap();
        assert_eq!(read_entries(&fs, &path, header).unwrap().len(), 1);
        let mut journal = Journal::open(Arc::new(fs.clone()), &path).unwrap();
        journal.append(&[entry(3, Fact::Warned)]).unwrap();
        assert_eq!(
            read_entries(&fs, &path, header).unwrap(),
            [
                entry(0, Fact::Final(RecipientState::Delivered)),
                entry(3, Fact::Warned)
            ]
        );
    }
}
