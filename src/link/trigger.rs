//! The trigger file (`link.trigger_file`): creating, touching or writing it asks for a
//! flush, as a NetworkManager, networkd, ppp or OpenWrt hook does when the link comes up
//! (see contrib/). Watched with notify on its directory (the file may not exist yet), and
//! its modification time is also polled, since inotify misses events on some file
//! systems.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::sync::mpsc;

/// Watches `file`; every change sends `()` on `changed`. `None` (logged) when the
/// platform refuses; polling still sees changes.
pub fn watch(
    file: &Path,
    changed: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())?
        .to_path_buf();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the trigger file's directory; polling it");
        return None;
    }
    let name = file.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && is_change(&event.kind)
            && event.paths.iter().any(|p| p.file_name() == Some(&name))
        {
            let _ = changed.send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the trigger file; polling it"))
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the trigger file; polling it"))
        .ok()?;
    Some(watcher)
}

/// An event that changes a file or a directory listing. Opening and reading are events
/// too (inotify's IN_OPEN): a watcher that acted on them would wake itself for ever.
pub fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
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
