//! File-system change notifications (notify; inotify on Linux) for the maildrop and the
//! trigger file. A directory is watched and a callback runs on changes only: creations,
//! modifications, writes closed. Opening and reading are events too (inotify's IN_OPEN),
//! and a watcher that acted on them would wake itself for ever with its own reads.
//! Callers keep polling as well: inotify misses events on some file systems.

use std::ffi::OsString;
use std::path::Path;

/// Watches `dir` (only the entry `name`, when given); `on_change` runs for each change.
/// `None`, with a warning naming `what`, when the platform refuses.
pub(crate) fn watch_dir(
    dir: &Path,
    name: Option<OsString>,
    what: &str,
    on_change: impl Fn() + Send + 'static,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && is_change(&event.kind)
            && name
                .as_ref()
                .is_none_or(|n| event.paths.iter().any(|p| p.file_name() == Some(n)))
        {
            on_change();
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch {what}; polling it"))
    .ok()?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(error = %e, "cannot watch {what}; polling it"))
        .ok()?;
    Some(watcher)
}

fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}
