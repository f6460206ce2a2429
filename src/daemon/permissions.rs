//! Who may see what in the spool. The daemon runs with umask 077: what it creates is
//! its own. A root daemon's spool holds every user's mail, so at each start it makes the
//! spool private — the spool and `maildrop/` 0711 (others may pass through, not list),
//! `tmp/`, `queue/`, `corrupt/` 0700, the index, its WAL and the journal 0600 — and
//! `maildrop/tmp` and `maildrop/new` writable by every local user: 1733, sticky and not
//! listable (Postfix's maildrop, without a setgid helper). A spool found open (made by
//! an older version, or by hand) is closed and the log says so. A daemon that is not
//! root leaves the directories as its service set them up (contrib/systemd's tmpfiles).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::spool::Layout;

/// The daemon's file-creation mask.
pub(crate) fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Sets the spool's permissions as the module header says (as root only).
pub(crate) fn secure_spool(layout: &Layout) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let maildrop = layout.maildrop_new.parent().unwrap_or(&layout.root);
    let index = layout.index.display().to_string();
    let (wal, shm) = (format!("{index}-wal"), format!("{index}-shm"));
    let want: Vec<(&Path, u32)> = vec![
        (&layout.root, 0o711),
        (maildrop, 0o711),
        (&layout.maildrop_tmp, 0o1733),
        (&layout.maildrop_new, 0o1733),
        (&layout.tmp, 0o700),
        (&layout.queue, 0o700),
        (&layout.corrupt, 0o700),
        (&layout.index, 0o600),
        (Path::new(&wal), 0o600),
        (Path::new(&shm), 0o600),
        (&layout.journal, 0o600),
    ];
    for (path, mode) in want {
        set_mode(path, mode);
    }
}

fn set_mode(path: &Path, mode: u32) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let had = meta.permissions().mode() & 0o7777;
    if had == mode {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) if had & 0o077 & !mode != 0 => tracing::warn!(
            path = %path.display(),
            was = format!("{had:04o}"),
            now = format!("{mode:04o}"),
            "spool permissions: others could read what is now private"
        ),
        Ok(()) => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "spool permissions not set"),
    }
}
