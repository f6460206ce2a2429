//! The trigger file (`link.trigger_file`): creating, touching or writing it asks for a
//! flush, as a NetworkManager, networkd, ppp or OpenWrt hook does when the link comes up
//! (see contrib/). Watched with notify on its directory (the file may not exist yet), and
//! its modification time is also polled, since inotify misses events on some file
//! systems.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::sync::mpsc;

/// Watches `file` (its directory, created if need be: the file may not exist yet);
/// every change sends `()` on `changed`. `None` (logged) when that cannot be done;
/// polling still sees changes.
pub fn watch(
    file: &Path,
    changed: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty())?;
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the trigger file's directory; polling it");
        return None;
    }
    let name = file.file_name()?.to_owned();
    crate::watch::watch_dir(dir, Some(name), "the trigger file", move || {
        let _ = changed.send(());
    })
}

/// The trigger file's modification time, for polling.
#[derive(Debug)]
pub struct Poll {
    file: PathBuf,
    seen: Option<SystemTime>,
}

impl Poll {
    pub fn new(file: &Path) -> Poll {
        Poll {
            file: file.to_path_buf(),
            seen: mtime(file),
        }
    }

    /// The file appeared or changed since the last look.
    pub fn changed(&mut self) -> bool {
        let now = mtime(&self.file);
        let changed = now.is_some() && now != self.seen;
        self.seen = now;
        changed
    }
}

fn mtime(file: &Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}
