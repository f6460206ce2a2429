//! A message being received: written into `tmp/` under its queue id, envelope first,
//! body streamed, then sealed (end record, fsync). A sealed draft goes to the writer
//! for commit. A draft dropped unsealed, or whose fsync failed, is removed: a failed
//! fsync is never retried (the kernel may have dropped the dirty pages).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::SpoolError;
use super::envelope::{Envelope, Trailer, write_header};
use super::fs::{Fs, FsFile};
use super::id::QueueId;

pub struct Draft {
    fs: Arc<dyn Fs>,
    tmp_path: PathBuf,
    envelope: Envelope,
    out: Option<BufWriter<Box<dyn FsFile>>>,
    size: u64,
    eight_bit: bool,
}

/// A fully written, fsynced draft waiting for commit.
#[derive(Debug)]
pub struct Sealed {
    pub(crate) envelope: Envelope,
    pub(crate) trailer: Trailer,
    pub(crate) tmp_path: PathBuf,
}

impl Sealed {
    pub fn id(&self) -> QueueId {
        self.envelope.id
    }
}

impl Draft {
    pub(crate) fn create(
        fs: Arc<dyn Fs>,
        tmp_path: PathBuf,
        envelope: Envelope,
    ) -> Result<Draft, SpoolError> {
        let file = fs
            .create_new(&tmp_path)
            .map_err(|e| SpoolError::io("create draft", e))?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let mut draft = Draft {
            fs,
            tmp_path,
            envelope,
            out: None,
            size: 0,
            eight_bit: false,
        };
        write_header(&mut out, &draft.envelope).map_err(|e| SpoolError::io("write draft", e))?;
        draft.out = Some(out);
        Ok(draft)
    }

    pub fn id(&self) -> QueueId {
        self.envelope.id
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Bytes of the message written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends message bytes, exactly as they are to be stored.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let out = self.out.as_mut().expect("draft is open until sealed");
        out.write_all(bytes)
            .map_err(|e| SpoolError::io("write draft", e))?;
        self.size += bytes.len() as u64;
        self.eight_bit |= bytes.iter().any(|b| *b >= 0x80);
        Ok(())
    }

    /// Writes the end record and fsyncs. On failure the draft is removed.
    pub fn seal(mut self) -> Result<Sealed, SpoolError> {
        let trailer = Trailer {
            size: self.size,
            eight_bit: self.eight_bit,
        };
        let mut out = self.out.take().expect("draft is open until sealed");
        let result = out
            .write_all(&trailer.end_record())
            .and_then(|()| out.into_inner().map_err(|e| e.into_error()))
            .and_then(|mut file| file.sync());
        match result {
            Ok(()) => Ok(Sealed {
                envelope: self.envelope.clone(),
                trailer,
                tmp_path: self.tmp_path.clone(),
            }),
            Err(e) => {
                let _ = self.fs.remove_file(&self.tmp_path);
                Err(SpoolError::io("fsync draft", e))
            }
        }
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = self.fs.remove_file(&self.tmp_path);
        }
    }
}
