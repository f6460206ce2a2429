//! What has arrived of a resumable transfer (`XRESUME`), kept so that a cut link costs
//! only what was in flight. One file per key in the spool's `partial/`: the content's
//! first bytes exactly as they came (decoded, before our `Received:` or any edit).
//!
//! Invariants:
//! - A partial is never a message. It becomes one only through a whole new transaction
//!   whose content, replayed from here and completed, matches the key's SHA-256; then it
//!   is removed. A mismatch removes it too.
//! - What the file holds is what it says: bytes are written as they arrive, fdatasynced
//!   every `SYNC_EVERY` bytes and when the connection lets go of it. The offset offered
//!   is the file's length then. A power cut can leave a tail that was never synced; the
//!   hash at the end catches it, and the sender sends the message whole.
//! - One holder per key. A new connection takes a key over from an old one that has not
//!   yet noticed its link is gone; the old one's later bytes are dropped, never mixed in.
//! - Files untouched for `keep` are removed (checked at most every `SWEEP_EVERY`).
//!
//! All I/O here blocks: callers on the runtime use `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::key::ResumeKey;

/// Bytes written between fdatasyncs while content arrives.
pub const SYNC_EVERY: u64 = 1 << 20;
/// Bytes kept in memory before they are written.
pub const WRITE_BATCH: usize = 128 << 10;
/// How often expired partials are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

pub struct PartialStore {
    dir: PathBuf,
    /// `keep`, in seconds (a configuration reload changes it).
    keep_secs: AtomicU64,
    /// Key to the holder that may write it.
    holders: Mutex<HashMap<String, u64>>,
    next_holder: AtomicU64,
    last_sweep: Mutex<Option<Instant>>,
}

impl PartialStore {
    /// Partials in `dir` (created, mode 0700, when first needed), kept for `keep`.
    pub fn new(dir: PathBuf, keep: Duration) -> Arc<PartialStore> {
        Arc::new(PartialStore {
            dir,
            keep_secs: AtomicU64::new(keep.as_secs()),
            holders: Mutex::new(HashMap::new()),
            next_holder: AtomicU64::new(1),
            last_sweep: Mutex::new(None),
        })
    }

    /// How long untouched partials are kept from now on.
    pub(crate) fn set_keep(&self, keep: Duration) {
        self.keep_secs.store(keep.as_secs(), Ordering::Relaxed);
    }

    /// Takes `key` over (from any earlier holder) and opens its file, creating it empty
    /// when there is none: the returned partial offers the bytes it holds.
    pub(crate) fn claim(self: &Arc<Self>, key: &ResumeKey) -> io::Result<Partial> {
        self.sweep_if_due();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let holder = self.next_holder.fetch_add(1, Ordering::Relaxed);
        let mut holders = self.holders.lock().expect("not poisoned");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join(key.as_str()))?;
        let held = file.metadata()?.len();
        holders.insert(key.as_str().to_owned(), holder);
        drop(holders);
        Ok(Partial {
            store: self.clone(),
            key: key.clone(),
            holder,
            file: Some(file),
            held,
            len: held,
            synced: held,
            replayed: 0,
            pending: Vec::new(),
            hash: ring::digest::Context::new(&ring::digest::SHA256),
        })
    }

    /// Removes partials untouched for `keep` that nobody holds.
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let keep = Duration::from_secs(self.keep_secs.load(Ordering::Relaxed));
        let holders = self.holders.lock().expect("not poisoned");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if ResumeKey::parse(name).is_none() || holders.contains_key(name) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= keep);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn sweep_if_due(&self) {
        let mut last = self.last_sweep.lock().expect("not poisoned");
        if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        self.sweep();
    }

    fn release(&self, key: &ResumeKey, holder: u64) {
        let mut holders = self.holders.lock().expect("not poisoned");
        if holders.get(key.as_str()) == Some(&holder) {
            holders.remove(key.as_str());
        }
    }
}

/// One connection's hold on a key: the bytes held when it was claimed (to be replayed
/// first), then what arrives after them.
pub struct Partial {
    store: Arc<PartialStore>,
    key: ResumeKey,
    holder: u64,
    /// `None` once superseded or removed.
    file: Option<File>,
    held: u64,
    len: u64,
    synced: u64,
    replayed: u64,
    pending: Vec<u8>,
    /// Over the whole content: the replayed bytes, then the new ones.
    hash: ring::digest::Context,
}

impl Partial {
    /// The bytes held when claimed: where the sender is told to go on from.
    pub fn offset(&self) -> u64 {
        self.held
    }

    pub fn key(&self) -> &ResumeKey {
        &self.key
    }

    /// The next piece of the held bytes, at most `max` (empty when all are replayed).
    pub fn replay(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let want = (self.held - self.replayed).min(max as u64) as usize;
        let mut buf = vec![0u8; want];
        if want > 0 {
            let file = self.file.as_ref().ok_or_else(superseded)?;
            file.read_exact_at(&mut buf, self.replayed)?;
        }
        self.replayed += want as u64;
        self.hash.update(&buf);
        Ok(buf)
    }

    /// New content bytes (after every held byte is replayed). True when enough is
    /// pending that `write_pending` should run.
    pub fn append(&mut self, raw: &[u8]) -> bool {
        debug_assert_eq!(self.replayed, self.held, "replay comes first");
        self.hash.update(raw);
        if self.file.is_some() {
            self.pending.extend_from_slice(raw);
        }
        self.pending.len() >= WRITE_BATCH
    }

    /// Writes what is pending, unless another connection took the key over; syncs when
    /// `sync`, or when `SYNC_EVERY` bytes are unsynced.
    pub(crate) fn write_pending(&mut self, sync: bool) -> io::Result<()> {
        let holders = self.store.holders.lock().expect("not poisoned");
        if holders.get(self.key.as_str()) != Some(&self.holder) {
            self.file = None;
            self.pending.clear();
            return Ok(());
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        file.write_all_at(&self.pending, self.len)?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        if (sync || self.len - self.synced >= SYNC_EVERY) && self.len > self.synced {
            file.sync_data()?;
            self.synced = self.len;
        }
        Ok(())
    }

    /// Whether all the content seen (replayed and new) has the key's SHA-256.
    pub fn matches(&self) -> bool {
        self.hash.clone().finish().as_ref() == self.key.sha256()
    }

    /// Done with: the message is committed, or the content did not match.
    pub fn remove(mut self) {
        self.pending.clear();
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(self.store.dir.join(self.key.as_str()));
        }
    }
}

impl Drop for Partial {
    /// Let go at the connection's end or the transaction's: what came is written and
    /// synced, for the next connection to offer.
    fn drop(&mut self) {
        if self.file.is_some()
            && let Err(e) = self.write_pending(true)
        {
            tracing::warn!(key = %self.key, error = %e, "partial content not kept");
        }
        self.store.release(&self.key, self.holder);
    }
}

fn superseded() -> io::Error {
    io::Error::other("taken over by a newer connection")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(content: &[u8]) -> ResumeKey {
        let d = ring::digest::digest(&ring::digest::SHA256, content);
        ResumeKey::new("T1", d.as_ref().try_into().unwrap())
    }

    fn drain(p: &mut Partial) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let piece = p.replay(1000).unwrap();
            if piece.is_empty() {
                return out;
            }
            out.extend(piece);
        }
    }

    #[test]
    fn a_cut_transfer_resumes_where_it_was_and_matches_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartialStore::new(dir.path().join("partial"), Duration::from_secs(3600));
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let key = key_of(&content);
        let mut first = store.claim(&key).unwrap();
        assert_eq!(first.offset(), 0);
        first.append(&content[..123_457]);
        drop(first); // the link was cut: what came is kept
        let mut second = store.claim(&key).unwrap();
        assert_eq!(second.offset(), 123_457);
        assert_eq!(drain(&mut second), &content[..123_457]);
        second.append(&content[123_457..]);
        assert!(second.matches());
        second.remove();
        assert_eq!(store.claim(&key).unwrap().offset(), 0);
    }

    #[test]
    fn a_newer_connection_takes_over_and_the_older_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartialStore::new(dir.path().to_path_buf(), Duration::from_secs(3600));
        let key = key_of(b"whatever");
        let mut old = store.claim(&key).unwrap();
        old.append(b"0123456789");
        old.write_pending(true).unwrap();
        let mut new = store.claim(&key).unwrap();
        assert_eq!(new.offset(), 10);
        old.append(b"STALE BYTES");
        drop(old);
        assert_eq!(drain(&mut new), b"0123456789");
        new.append(b"abc");
        drop(new);
        let again = store.claim(&key).unwrap();
        assert_eq!(again.offset(), 13);
    }

    #[test]
    fn wrong_content_does_not_match_and_old_partials_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartialStore::new(dir.path().to_path_buf(), Duration::ZERO);
        let key = key_of(b"the real content");
        let mut p = store.claim(&key).unwrap();
        p.append(b"something else");
        assert!(!p.matches());
        drop(p);
        assert!(dir.path().join(key.as_str()).exists());
        std::fs::write(dir.path().join("not-a-key"), b"x").unwrap();
        store.sweep();
        assert!(!dir.path().join(key.as_str()).exists());
        assert!(
            dir.path().join("not-a-key").exists(),
            "only partials are swept"
        );
    }
}
