//! Pickup: moves drops from `maildrop/new` into the queue through the normal commit
//! path. A drop is untrusted input: its envelope is re-checked, its content canonicalised
//! to CRLF, lines over 998 octets folded, and bounded by `accept.max_message_size`; a
//! bad drop goes to `corrupt/`. Its identity is settled on the way (local names, sender
//! rewriting, DKIM signature: identity).
//! Exactly once: the drop's name is committed with the message, and a drop whose name
//! is already indexed (a crash after commit, before unlink) is only removed.

use std::io::Read;
use std::path::Path;

use crate::identity::incoming::Incoming;
use crate::printable::printable;

use crate::spool::maildrop::{DropError, is_drop_name, open_drop};
use crate::spool::{
    Envelope, IndexReader, Origin, OriginKind, QueueId, Spool, SpoolError, now_unix,
};

pub struct Pickup {
    pub spool: Spool,
    pub hostname: String,
    pub max_message_size: u64,
    /// Local names, aliases and sender rewriting.
    pub identity: std::sync::Arc<crate::identity::Identity>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Queued(QueueId),
    /// Committed before a crash; the leftover drop was removed.
    AlreadyQueued,
    Quarantined(String),
}

impl Pickup {
    /// Picks up every drop now in `maildrop/new`, oldest name first, until `stop()`.
    pub fn scan(&self, stop: &dyn Fn() -> bool) -> Result<usize, SpoolError> {
        let layout = self.spool.layout();
        let mut names = self
            .spool
            .fs()
            .list_dir(&layout.maildrop_new)
            .map_err(|e| SpoolError::io("list maildrop/new", e))?;
        if names.is_empty() {
            return Ok(0);
        }
        names.sort();
        let reader = match IndexReader::open(layout) {
            Ok(Some(reader)) => reader,
            Ok(None) => return Ok(0),
            Err(e) => return Err(SpoolError::io("read the index", std::io::Error::other(e))),
        };
        let mut picked = 0;
        for name in names {
            if stop() {
                break;
            }
            let outcome = self.ingest(&reader, &name)?;
            if let Outcome::Quarantined(reason) = &outcome {
                let name = name.to_string_lossy();
                tracing::error!(drop = %printable(&name), reason, "maildrop file quarantined in corrupt/");
            }
            picked += 1;
        }
        Ok(picked)
    }

    fn ingest(&self, index: &IndexReader, name: &std::ffi::OsStr) -> Result<Outcome, SpoolError> {
        let layout = self.spool.layout();
        let fs = self.spool.fs().as_ref();
        let path = layout.maildrop_new.join(name);
        let Some(name) = name.to_str().filter(|n| is_drop_name(n)) else {
            return self.quarantine(&path, "bad file name");
        };
        let known = index
            .has_drop(name)
            .map_err(|e| SpoolError::io("read the index", std::io::Error::other(e)))?;
        if known {
            self.remove_drop(&path)?;
            return Ok(Outcome::AlreadyQueued);
        }
        let dropped = match open_drop(fs, &path) {
            Ok(drop) => drop,
            Err(DropError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Outcome::AlreadyQueued);
            }
            Err(e) => return self.quarantine(&path, &e.to_string()),
        };
        let uid = Some(dropped.owner);
        let env = dropped.envelope;
        let smtputf8 = env.sender.is_utf8() || env.recipients.iter().any(|r| r.address.is_utf8());
        let origin = Origin {
            kind: OriginKind::Local,
            uid,
            drop: Some(name.to_owned()),
            ..Origin::default()
        };
        let mut envelope = Envelope {
            smtputf8,
            envid: env.envid,
            ret: env.ret,
            ..Envelope::new(env.sender, env.recipients, origin)
        };
        let mut content = Incoming::new(self.identity.prepare(&mut envelope));
        let mut draft = self.spool.create_draft(envelope)?;
        let trace = self.received_header(draft.id(), uid);
        draft.write(trace.as_bytes())?;
        content.written(trace.as_bytes());
        let mut body = dropped.body;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match body.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(SpoolError::io("read maildrop file", e)),
            };
            let Ok(piece) = content.push(&chunk[..n]) else {
                drop(draft);
                return self.quarantine(&path, "message contains a NUL byte");
            };
            draft.write(piece)?;
            if draft.size() > self.max_message_size {
                drop(draft);
                return self.quarantine(&path, "message larger than accept.max_message_size");
            }
        }
        draft.write(content.finish())?;
        let prepend = content.prepend(draft.id().as_str());
        let id = self
            .spool
            .commit_blocking(draft.seal_prepending(prepend)?)?;
        if content.folded() {
            tracing::info!(id = %id, "lines longer than 998 octets were folded");
        }
        self.remove_drop(&path)?;
        Ok(Outcome::Queued(id))
    }

    /// RFC 5321 §4.4 trace header for a local submission; `uid` is the file owner, which
    /// the submitter cannot forge.
    fn received_header(&self, id: QueueId, uid: Option<u32>) -> String {
        let date = crate::smtp::date::now();
        let from = uid
            .map(|u| format!(", from userid {u}"))
            .unwrap_or_default();
        format!(
            "Received: by {} (ferrymail{from})\r\n\tid {id}; {date}\r\n",
            self.hostname
        )
    }

    fn remove_drop(&self, path: &Path) -> Result<(), SpoolError> {
        let fs = self.spool.fs();
        match fs.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove maildrop file", e)),
        }
        fs.sync_dir(&self.spool.layout().maildrop_new)
            .map_err(|e| SpoolError::io("fsync maildrop/new", e))
    }

    fn quarantine(&self, path: &Path, reason: &str) -> Result<Outcome, SpoolError> {
        let layout = self.spool.layout();
        let fs = self.spool.fs();
        let target = layout.corrupt.join(format!(
            "maildrop.{}.{}",
            now_unix(),
            crate::spool::maildrop::new_drop_name()
        ));
        fs.rename(path, &target)
            .and_then(|()| fs.sync_dir(&layout.corrupt))
            .and_then(|()| fs.sync_dir(&layout.maildrop_new))
            .map_err(|e| SpoolError::io("quarantine maildrop file", e))?;
        Ok(Outcome::Quarantined(reason.to_owned()))
    }
}

/// Removes files in `dir` (maildrop/tmp) not modified for `age`: drops whose writer died.
/// A writer still at work keeps its file's mtime fresh.
pub(crate) fn sweep_stale(dir: &Path, age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age));
        if old && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed an abandoned maildrop draft");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stale_drafts_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        let fresh = dir.path().join("fresh");
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&fresh, b"x").unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        sweep_stale(dir.path(), std::time::Duration::from_secs(36 * 3600));
        assert!(!old.exists());
        assert!(fresh.exists());
    }
}
