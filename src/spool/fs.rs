//! The file-system operations the spool relies on, behind a small trait so tests can
//! swap in `SimFs`, which forgets on a simulated power cut everything not fsynced.
//! Durability rules (spool/README.md): file content needs `FsFile::sync`; a name created,
//! renamed or removed in a directory needs `Fs::sync_dir` of that directory.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// A file being written.
pub trait FsFile: Write + Send + Sync {
    /// Flushes and fsyncs the content. A failure is final: the caller discards the file.
    fn sync(&mut self) -> io::Result<()>;
}

/// A file being read.
pub trait FsRead: Read + Seek + Send {}
impl<T: Read + Seek + Send> FsRead for T {}

pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a file that must not exist yet, readable by its owner only.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens a file for appending, creating it (owner-only) when missing. A new file's
    /// name is durable only after `sync_dir`.
    fn append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    fn open(&self, path: &Path) -> io::Result<Box<dyn FsRead>>;
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Opens a file another user may have put there (a maildrop drop) as `open_regular`
    /// does; with its owner (the submitter, who cannot forge it) and length, read from
    /// the open file.
    fn open_untrusted(&self, path: &Path) -> io::Result<(Box<dyn FsRead>, FileFacts)>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes everything on `file`'s file system durable (syncfs(2)): for a directory we
    /// may write but not read, such as the maildrop, whose fsync needs it opened.
    fn sync_filesystem(&self, file: &Path) -> io::Result<()>;
    /// Entry names of a directory, unsorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
}

/// What the open file says of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFacts {
    pub owner: u32,
    pub len: u64,
}

/// Opens `path` for reading only if it is a regular file with no other hard link: never
/// following a symbolic link (`O_NOFOLLOW`), never blocking on a FIFO (`O_NONBLOCK`),
/// the checks made on the opened file, so nothing can be swapped in between. A local
/// user can put anything in a world-writable directory; this reads only what they
/// wrote themselves.
pub(crate) fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(io::ErrorKind::InvalidData, "a symbolic link"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file (a FIFO, device, socket or directory)",
        ));
    }
    if meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a file with {} hard links", meta.nlink()),
        ));
    }
    Ok((file, meta))
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(File);

impl Write for RealFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FsFile for RealFile {
    fn sync(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.sync_all()
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsRead>> {
        Ok(Box::new(File::open(path)?))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::symlink_metadata(path)?.len())
    }

    fn open_untrusted(&self, path: &Path) -> io::Result<(Box<dyn FsRead>, FileFacts)> {
        let (file, meta) = open_regular(path)?;
        let facts = FileFacts {
            owner: meta.uid(),
            len: meta.len(),
        };
        Ok((Box::new(file), facts))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn sync_filesystem(&self, file: &Path) -> io::Result<()> {
        Ok(rustix::fs::syncfs(File::open(file)?)?)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }
}
