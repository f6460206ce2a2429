//! Where everything lives under the spool root (spool/README.md). Paths only; no I/O.

use std::path::{Path, PathBuf};

use super::id::QueueId;

#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    /// Drafts being received; anything here at start-up is debris and is removed.
    pub tmp: PathBuf,
    /// Committed message files, one per queue id.
    pub queue: PathBuf,
    pub maildrop_tmp: PathBuf,
    pub maildrop_new: PathBuf,
    /// What arrived of cut XFERRY transfers, kept for the sender to resume
    /// (`ferry::partial`); never messages.
    pub partial: PathBuf,
    /// Quarantine for damaged files and orphaned index rows; never deleted by us.
    pub corrupt: PathBuf,
    pub index: PathBuf,
    /// The outcome journal: what a rebuilt index must not forget.
    pub journal: PathBuf,
    pub lock: PathBuf,
    pub control: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        let root = root.to_path_buf();
        Layout {
            tmp: root.join("tmp"),
            queue: root.join("queue"),
            maildrop_tmp: root.join("maildrop/tmp"),
            maildrop_new: root.join("maildrop/new"),
            corrupt: root.join("corrupt"),
            partial: root.join("partial"),
            index: root.join("index.sqlite3"),
            journal: root.join("journal"),
            lock: root.join("lock"),
            control: root.join("control.sock"),
            root,
        }
    }

    /// Keeps the index somewhere else (the power-cut tests keep a real SQLite file
    /// beside a simulated spool).
    pub fn with_index(mut self, index: PathBuf) -> Layout {
        self.index = index;
        self
    }

    pub fn message_path(&self, id: QueueId) -> PathBuf {
        self.queue.join(id.as_str())
    }

    pub fn draft_path(&self, id: QueueId) -> PathBuf {
        self.tmp.join(id.as_str())
    }

    /// Directories the daemon creates at start.
    pub(crate) fn dirs(&self) -> [&Path; 5] {
        [
            &self.tmp,
            &self.queue,
            &self.maildrop_tmp,
            &self.maildrop_new,
            &self.corrupt,
        ]
    }
}
