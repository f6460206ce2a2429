//! One message's content on its way into the spool. Content arrives on the async side;
//! the draft is written on a blocking thread in batches of `BATCH` bytes, so memory per
//! session stays bounded and the runtime never blocks on the disk. A write error is kept
//! and reported at the end (the content is still read, so the session stays in step).

use super::received::HeaderScan;
use crate::spool::{Draft, Envelope, QueueId, Spool, SpoolError};

/// Bytes buffered before a write to the draft.
const BATCH: usize = 256 * 1024;

pub struct Intake {
    spool: Spool,
    draft: Option<Draft>,
    pending: Vec<u8>,
    headers: HeaderScan,
    /// For authenticated submissions: add `Date:`/`Message-ID:` when missing, under
    /// this hostname, at the end of the header section.
    fix_headers_for: Option<String>,
    failed: Option<SpoolError>,
}

impl Intake {
    /// Creates the draft and writes `trace` (our `Received:` header) into it. With
    /// `fix_headers_for`, missing `Date:`/`Message-ID:` fields are added.
    pub async fn start(
        spool: &Spool,
        envelope: Envelope,
        trace: String,
        fix_headers_for: Option<String>,
    ) -> Intake {
        let s = spool.clone();
        let created = tokio::task::spawn_blocking(move || {
            let mut draft = s.create_draft(envelope)?;
            draft.write(trace.as_bytes())?;
            Ok::<_, SpoolError>(draft)
        })
        .await
        .unwrap_or_else(|e| Err(SpoolError::io("draft task", std::io::Error::other(e))));
        let (draft, failed) = match created {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        };
        Intake {
            spool: spool.clone(),
            draft,
            pending: Vec::with_capacity(BATCH),
            headers: HeaderScan::default(),
            fix_headers_for,
            failed,
        }
    }

    pub fn id(&self) -> Option<QueueId> {
        self.draft.as_ref().map(Draft::id)
    }

    /// Content bytes, exactly as they are to be stored.
    pub async fn push(&mut self, bytes: &[u8]) {
        let header_end = self.headers.feed(bytes);
        if self.failed.is_some() {
            return;
        }
        match header_end {
            Some(at) if self.fix_headers_for.is_some() => {
                self.pending.extend_from_slice(&bytes[..at]);
                self.add_missing_fields();
                self.pending.extend_from_slice(&bytes[at..]);
            }
            _ => self.pending.extend_from_slice(bytes),
        }
        if self.pending.len() >= BATCH {
            self.flush().await;
        }
    }

    fn add_missing_fields(&mut self) {
        if let (Some(hostname), Some(id)) = (self.fix_headers_for.take(), self.id()) {
            let fields = self.headers.missing_fields(id.as_str(), &hostname);
            self.pending.extend_from_slice(fields.as_bytes());
        }
    }

    /// `Received:` fields seen in the message's header section.
    pub fn received_count(&self) -> usize {
        self.headers.received()
    }

    async fn flush(&mut self) {
        let Some(mut draft) = self.draft.take() else {
            return;
        };
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let (draft, result) = tokio::task::spawn_blocking(move || {
            let result = draft.write(&batch);
            (draft, result)
        })
        .await
        .expect("draft writes do not panic");
        match result {
            Ok(()) => self.draft = Some(draft),
            Err(e) => self.failed = Some(e), // the draft is dropped, so removed
        }
    }

    /// Makes the message durable: last write, fsync, rename, group commit.
    pub async fn commit(mut self) -> Result<QueueId, SpoolError> {
        if !self.headers.ended() {
            // All header, no body: the fields go at the end.
            self.add_missing_fields();
        }
        self.flush().await;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let draft = self.draft.take().expect("no failure means a draft");
        let sealed = tokio::task::spawn_blocking(move || draft.seal())
            .await
            .map_err(|e| SpoolError::io("seal task", std::io::Error::other(e)))??;
        self.spool.commit(sealed).await
    }
}
