//! A message being received: written into `tmp/` under its queue id, envelope first,
//! body streamed, then sealed: end record, fsync, rename into `queue/`. Sealing runs in
//! the producer's thread, so many drafts fsync and rename in parallel; the writer then
//! makes a whole group durable with one fsync of `queue/` and one index transaction.
//! A draft dropped unsealed, or whose fsync failed, is removed (a failed fsync is never
//! retried: the kernel may have dropped the dirty pages), and so is a sealed draft that
//! is dropped without a successful commit: only committed files stay in `queue/`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::SpoolError;
use super::envelope::{BodySum, Envelope, MAX_PREPEND, Trailer, prepend_record, write_header};
use super::fs::{Fs, FsFile};
use super::id::QueueId;

pub struct Draft {
    fs: Arc<dyn Fs>,
    tmp_path: PathBuf,
    queue_path: PathBuf,
    envelope: Envelope,
    out: Option<BufWriter<Box<dyn FsFile>>>,
    sum: BodySum,
}

/// A fully written, fsynced draft, renamed into `queue/` but not yet durable by name
/// nor indexed: it waits for the writer's commit.
pub struct Sealed {
    pub(crate) envelope: Envelope,
    pub(crate) trailer: Trailer,
    /// Header fields stored to go before the body.
    pub(crate) prepend: Vec<u8>,
    fs: Arc<dyn Fs>,
    queue_path: PathBuf,
    committed: bool,
}

impl Sealed {
    pub fn id(&self) -> QueueId {
        self.envelope.id
    }

    /// The commit succeeded: the file stays.
    pub(crate) fn keep(&mut self) {
        self.committed = true;
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.fs.remove_file(&self.queue_path);
        }
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("id", &self.envelope.id)
            .field("trailer", &self.trailer)
            .finish()
    }
}

impl Draft {
    pub(crate) fn create(
        fs: Arc<dyn Fs>,
        tmp_path: PathBuf,
        queue_path: PathBuf,
        envelope: Envelope,
    ) -> Result<Draft, SpoolError> {
        let file = fs
            .create_new(&tmp_path)
            .map_err(|e| SpoolError::io("create draft", e))?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let mut draft = Draft {
            fs,
            tmp_path,
            queue_path,
            envelope,
            out: None,
            sum: BodySum::default(),
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
        self.sum.size()
    }

    /// Appends message bytes, exactly as they are to be stored.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let out = self.out.as_mut().expect("draft is open until sealed");
        out.write_all(bytes)
            .map_err(|e| SpoolError::io("write draft", e))?;
        self.sum.update(bytes);
        Ok(())
    }

    /// Writes the end record, fsyncs, and renames the file into `queue/`. On failure the
    /// draft is removed.
    pub fn seal(self) -> Result<Sealed, SpoolError> {
        self.seal_prepending(Vec::new())
    }

    /// `seal`, with header fields made from the whole message (a DKIM signature) stored
    /// to go before it (at most `MAX_PREPEND` bytes).
    pub(crate) fn seal_prepending(mut self, prepend: Vec<u8>) -> Result<Sealed, SpoolError> {
        if prepend.len() > MAX_PREPEND {
            return Err(SpoolError::io(
                "seal draft",
                std::io::Error::other("prepended fields too large"),
            ));
        }
        let mut trailer = self.sum.trailer();
        trailer.prepended = !prepend.is_empty();
        let mut out = self.out.take().expect("draft is open until sealed");
        let record = if prepend.is_empty() {
            Vec::new()
        } else {
            prepend_record(&prepend)
        };
        let result = out
            .write_all(&record)
            .and_then(|()| out.write_all(&trailer.end_record()))
            .and_then(|()| out.into_inner().map_err(|e| e.into_error()))
            .and_then(|mut file| file.sync());
        if let Err(e) = result {
            let _ = self.fs.remove_file(&self.tmp_path);
            return Err(SpoolError::io("fsync draft", e));
        }
        if let Err(e) = self.fs.rename(&self.tmp_path, &self.queue_path) {
            let _ = self.fs.remove_file(&self.tmp_path);
            return Err(SpoolError::io("rename into queue", e));
        }
        Ok(Sealed {
            envelope: self.envelope.clone(),
            trailer,
            prepend,
            fs: self.fs.clone(),
            queue_path: self.queue_path.clone(),
            committed: false,
        })
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = self.fs.remove_file(&self.tmp_path);
        }
    }
}
