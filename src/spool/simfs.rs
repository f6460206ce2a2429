//! A simulated file system for power-cut tests. Each file has volatile and durable
//! content; each directory volatile and durable entries. `FsFile::sync` makes content
//! durable, `sync_dir` makes a directory's names durable, and `crash_image(n)` returns
//! the state a power cut right after the n-th mutating operation would leave: only what
//! had been made durable. Directories themselves are taken as durable once created.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fs::{FileFacts, Fs, FsFile, FsRead};

#[derive(Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Clone, Default)]
struct Dir {
    entries: BTreeMap<OsString, usize>,
    durable: BTreeMap<OsString, usize>,
}

#[derive(Clone, Default)]
struct State {
    inodes: Vec<Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
}

impl State {
    /// What survives a power cut.
    fn crashed(&self) -> State {
        let mut s = self.clone();
        for inode in &mut s.inodes {
            inode.data = inode.durable.clone();
        }
        for dir in s.dirs.values_mut() {
            dir.entries = dir.durable.clone();
        }
        s
    }

    fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
        match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => Ok((p.to_path_buf(), n.to_owned())),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "bad path")),
        }
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<usize> {
        let (dir, name) = Self::split(path)?;
        self.dirs
            .get(&dir)
            .and_then(|d| d.entries.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", path.display()),
    )
}

/// A failure to inject into the next operation of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `FsFile::sync` fails with EIO (nothing becomes durable).
    FileSync,
    /// The next `sync_dir` fails with EIO.
    DirSync,
}

struct Inner {
    fault: Option<Fault>,
    /// Writes fail with ENOSPC while set.
    full: bool,
    state: State,
    /// The crash image after each mutating operation; `images[0]` is the start.
    images: Vec<State>,
}

/// A shared handle: clones see the same simulated disk.
#[derive(Clone)]
pub struct SimFs {
    inner: Arc<Mutex<Inner>>,
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs::from_state(State::default())
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn from_state(state: State) -> SimFs {
        let images = vec![state.crashed()];
        SimFs {
            inner: Arc::new(Mutex::new(Inner {
                fault: None,
                full: false,
                state,
                images,
            })),
        }
    }

    /// How many mutating operations have run so far.
    pub fn ops(&self) -> usize {
        self.inner.lock().unwrap().images.len() - 1
    }

    /// A fresh file system holding what a power cut after `ops` operations leaves.
    pub fn crash_image(&self, ops: usize) -> SimFs {
        let image = self.inner.lock().unwrap().images[ops].clone();
        SimFs::from_state(image)
    }

    /// Makes the next operation of the fault's kind fail.
    pub fn inject(&self, fault: Fault) {
        self.inner.lock().unwrap().fault = Some(fault);
    }

    /// A full disk: every write fails with ENOSPC until `set_full(false)`.
    pub fn set_full(&self, full: bool) {
        self.inner.lock().unwrap().full = full;
    }

    fn take_fault(&self, kind: Fault) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if inner.fault == Some(kind) {
            inner.fault = None;
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }

    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut inner = self.inner.lock().unwrap();
        let result = f(&mut inner.state)?;
        let image = inner.state.crashed();
        inner.images.push(image);
        Ok(result)
    }

    fn read_state<T>(&self, f: impl FnOnce(&State) -> io::Result<T>) -> io::Result<T> {
        f(&self.inner.lock().unwrap().state)
    }
}

struct SimFile {
    fs: SimFs,
    inode: usize,
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.fs.inner.lock().unwrap().full {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let inode = self.inode;
        self.fs.mutate(|s| {
            s.inodes[inode].data.extend_from_slice(buf);
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for SimFile {
    fn sync(&mut self) -> io::Result<()> {
        self.fs.take_fault(Fault::FileSync)?;
        let inode = self.inode;
        self.fs.mutate(|s| {
            let node = &mut s.inodes[inode];
            node.durable = node.data.clone();
            Ok(())
        })
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        for ancestor in dir.ancestors() {
            inner.state.dirs.entry(ancestor.to_path_buf()).or_default();
            for image in &mut inner.images {
                image.dirs.entry(ancestor.to_path_buf()).or_default();
            }
        }
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let (dir, name) = State::split(path)?;
        let inode = self.mutate(|s| {
            let id = s.inodes.len();
            let d = s.dir_mut(&dir)?;
            if d.entries.contains_key(&name) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            d.entries.insert(name, id);
            s.inodes.push(Inode::default());
            Ok(id)
        })?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let inode = match self.read_state(|s| s.lookup(path)) {
            Ok(inode) => inode,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.create_new(path);
            }
            Err(e) => return Err(e),
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsRead>> {
        let data = self.read_state(|s| Ok(s.inodes[s.lookup(path)?].data.clone()))?;
        Ok(Box::new(Cursor::new(data)))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        self.read_state(|s| Ok(s.inodes[s.lookup(path)?].data.len() as u64))
    }

    fn open_untrusted(&self, path: &Path) -> io::Result<(Box<dyn FsRead>, FileFacts)> {
        let data = self.read_state(|s| Ok(s.inodes[s.lookup(path)?].data.clone()))?;
        let facts = FileFacts {
            owner: 0,
            len: data.len() as u64,
        };
        Ok((Box::new(Cursor::new(data)), facts))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = State::split(from)?;
        let (to_dir, to_name) = State::split(to)?;
        self.mutate(|s| {
            let inode = s
                .dir_mut(&from_dir)?
                .entries
                .remove(&from_name)
                .ok_or_else(|| not_found(from))?;
            s.dir_mut(&to_dir)?.entries.insert(to_name, inode);
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = State::split(path)?;
        self.mutate(|s| {
            s.dir_mut(&dir)?
                .entries
                .remove(&name)
                .map(|_| ())
                .ok_or_else(|| not_found(path))
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.take_fault(Fault::DirSync)?;
        self.mutate(|s| {
            let d = s.dir_mut(dir)?;
            d.durable = d.entries.clone();
            Ok(())
        })
    }

    fn sync_filesystem(&self, file: &Path) -> io::Result<()> {
        self.take_fault(Fault::DirSync)?;
        self.mutate(|s| {
            s.lookup(file)?;
            for inode in &mut s.inodes {
                inode.durable = inode.data.clone();
            }
            for dir in s.dirs.values_mut() {
                dir.durable = dir.entries.clone();
            }
            Ok(())
        })
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        self.read_state(|s| {
            Ok(s.dirs
                .get(dir)
                .ok_or_else(|| not_found(dir))?
                .entries
                .keys()
                .cloned()
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_state_survives() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut f = fs.create_new(&dir.join("a")).unwrap();
        f.write_all(b"hello").unwrap();
        let after_write = fs.ops();
        f.sync().unwrap();
        let after_sync = fs.ops();
        fs.sync_dir(dir).unwrap();
        let after_dir_sync = fs.ops();

        assert!(
            fs.crash_image(after_write)
                .list_dir(dir)
                .unwrap()
                .is_empty()
        );
        assert!(fs.crash_image(after_sync).list_dir(dir).unwrap().is_empty());
        let image = fs.crash_image(after_dir_sync);
        assert_eq!(image.len(&dir.join("a")).unwrap(), 5);

        // A name made durable before its content leaves an empty file.
        let mut g = fs.create_new(&dir.join("b")).unwrap();
        fs.sync_dir(dir).unwrap();
        g.write_all(b"lost").unwrap();
        let image = fs.crash_image(fs.ops());
        assert_eq!(image.len(&dir.join("b")).unwrap(), 0);
    }

    #[test]
    fn syncing_the_file_system_makes_everything_durable() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut f = fs.create_new(&dir.join("a")).unwrap();
        f.write_all(b"hello").unwrap();
        fs.rename(&dir.join("a"), &dir.join("b")).unwrap();
        fs.sync_filesystem(&dir.join("b")).unwrap();
        let image = fs.crash_image(fs.ops());
        assert_eq!(image.len(&dir.join("b")).unwrap(), 5);
        assert!(fs.sync_filesystem(&dir.join("missing")).is_err());
    }
}
