//! The maildrop: where `ferrymail send` leaves messages, maildir-style, whether or not
//! the daemon runs. A drop is written in `maildrop/tmp/`, fsynced, renamed into
//! `maildrop/new/`, and `new/` fsynced: once in `new/` it is complete. The daemon treats
//! every drop as untrusted: the envelope line is bounded and every address re-checked.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::envelope::Recipient;
use super::fs::{Fs, FsFile, FsRead};
use super::layout::Layout;
use crate::smtp::{Ret, ReversePath};

pub const MAGIC: &[u8] = b"ferrymail-drop 1\n";
/// Bound on the envelope line of a drop.
pub const MAX_DROP_ENVELOPE: usize = 4 << 20;
/// Most recipients one local injection may name.
pub const MAX_DROP_RECIPIENTS: usize = 10_000;

/// What `send` knows of the envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropEnvelope {
    /// Stored as text, empty for the null reverse-path.
    pub sender: ReversePath,
    pub recipients: Vec<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// Unix seconds when `send` wrote it.
    pub submitted_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a maildrop file (bad magic line)")]
    Magic,
    #[error("envelope line missing or longer than {MAX_DROP_ENVELOPE} bytes")]
    EnvelopeLine,
    #[error("envelope: {0}")]
    Envelope(String),
}

/// A drop's name: `<secs>.<micros>.P<pid>.R<random>` (maildir style), unique per spool.
pub(crate) fn new_drop_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the OS random source works");
    format!(
        "{}.{:06}.P{}.R{:016x}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        u64::from_le_bytes(random)
    )
}

/// A drop name is 1 to 100 characters of `[A-Za-z0-9._-]`, not starting with a dot.
pub(crate) fn is_drop_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A drop being written by `send`.
pub struct DropWriter<'a> {
    fs: &'a dyn Fs,
    layout: &'a Layout,
    name: String,
    tmp_path: PathBuf,
    out: Option<io::BufWriter<Box<dyn FsFile>>>,
}

impl<'a> DropWriter<'a> {
    pub fn create(fs: &'a dyn Fs, layout: &'a Layout, envelope: &DropEnvelope) -> io::Result<Self> {
        let name = new_drop_name();
        let tmp_path = layout.maildrop_tmp.join(&name);
        let mut out = io::BufWriter::with_capacity(64 * 1024, fs.create_new(&tmp_path)?);
        // Readable by the group too: where `maildrop/` is setgid to the daemon's group
        // (contrib/systemd/ferrymail.conf for tmpfiles.d), a daemon that is not root can
        // read every user's drop, and no other user can.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(0o640));
        }
        let mut writer = DropWriter {
            fs,
            layout,
            name,
            tmp_path,
            out: None,
        };
        out.write_all(MAGIC)?;
        out.write_all(&serde_json::to_vec(envelope).map_err(io::Error::other)?)?;
        out.write_all(b"\n")?;
        writer.out = Some(out);
        Ok(writer)
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out
            .as_mut()
            .expect("open until finished")
            .write_all(bytes)
    }

    /// fsync, move into `new/`, fsync `new/`. Returns the drop's name. A user who may
    /// write `new/` but not read it (mode 1733) cannot open it to fsync it: the whole
    /// file system is synced instead (syncfs), which covers the new name too.
    pub fn finish(mut self) -> io::Result<String> {
        let out = self.out.take().expect("open until finished");
        let done = self.layout.maildrop_new.join(&self.name);
        let written = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|mut f| f.sync())
            .and_then(|()| self.fs.rename(&self.tmp_path, &done));
        if let Err(e) = written {
            let _ = self.fs.remove_file(&self.tmp_path);
            return Err(e);
        }
        let durable = match self.fs.sync_dir(&self.layout.maildrop_new) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => self.fs.sync_filesystem(&done),
            other => other,
        };
        if let Err(e) = durable {
            // Not known to be durable: take it back rather than leave it half-sent.
            let _ = self.fs.remove_file(&done);
            return Err(e);
        }
        Ok(std::mem::take(&mut self.name))
    }
}

impl Drop for DropWriter<'_> {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = self.fs.remove_file(&self.tmp_path);
        }
    }
}

/// An opened drop: its checked envelope, and a reader positioned at the message.
pub struct OpenDrop {
    pub envelope: DropEnvelope,
    /// Who wrote it: the file's owner.
    pub owner: u32,
    /// The file's length.
    pub len: u64,
    /// Where the message starts in the file.
    pub body_offset: u64,
    pub body: BufReader<Box<dyn FsRead>>,
}

/// Opens the drop at `path`: a regular file with one link, never followed nor waited on
/// (`Fs::open_untrusted`), whose envelope line passes the checks.
pub(crate) fn open_drop(fs: &dyn Fs, path: &Path) -> Result<OpenDrop, DropError> {
    let (file, facts) = fs.open_untrusted(path)?;
    let mut reader = BufReader::new(file);
    let mut magic = vec![0u8; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|_| DropError::Magic)?;
    if magic != MAGIC {
        return Err(DropError::Magic);
    }
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_DROP_ENVELOPE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    let body_offset = (MAGIC.len() + line.len()) as u64;
    if line.pop() != Some(b'\n') {
        return Err(DropError::EnvelopeLine);
    }
    let envelope: DropEnvelope =
        serde_json::from_slice(&line).map_err(|e| DropError::Envelope(e.to_string()))?;
    check(&envelope).map_err(DropError::Envelope)?;
    Ok(OpenDrop {
        envelope,
        owner: facts.owner,
        len: facts.len,
        body_offset,
        body: reader,
    })
}

fn check(e: &DropEnvelope) -> Result<(), String> {
    if e.recipients.is_empty() {
        return Err("no recipients".into());
    }
    if e.recipients.len() > MAX_DROP_RECIPIENTS {
        return Err(format!("more than {MAX_DROP_RECIPIENTS} recipients"));
    }
    for r in &e.recipients {
        if r.orcpt
            .as_deref()
            .is_some_and(|o| o.chars().any(char::is_control))
        {
            return Err("control character in a DSN parameter".into());
        }
    }
    if e.envid
        .as_deref()
        .is_some_and(|s| s.chars().any(char::is_control))
    {
        return Err("control character in ENVID".into());
    }
    Ok(())
}
