//! The spool lock: an exclusive `flock` on `<spool>/lock`, holding the owner's pid.
//! Whoever holds it is the only process that commits to, or changes, the spool: the
//! daemon, or a queue command acting while the daemon is down.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("spool {spool} is in use by pid {pid} (another ferrymail is running on it)")]
    Busy { spool: PathBuf, pid: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

impl SpoolLock {
    pub(crate) fn acquire(root: &Path, lock_path: &Path) -> Result<SpoolLock, LockError> {
        let io = |source| LockError::Io {
            path: lock_path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(LockError::Busy {
                    spool: root.to_path_buf(),
                    pid: pid.trim().to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(SpoolLock { _file: file })
    }
}
