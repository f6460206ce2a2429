//! One message's content on its way into the spool. Content arrives on the async side
//! and is kept in memory until `BATCH` bytes have come; only then is the draft created
//! and written, on a blocking thread, a batch at a time, so memory per session stays
//! bounded and the runtime never blocks on the disk. A message smaller than a batch —
//! most mail — costs one hand-off to a blocking thread in all: create, write, fsync and
//! rename at once, then the writer's group commit. A write error is kept and reported at
//! the end (the content is still read, so the session stays in step).

use super::received::HeaderScan;
use crate::identity::ContentEdits;
use crate::smtp::line_length::LineLength;
use crate::spool::{Draft, Envelope, QueueId, Sealed, Spool, SpoolError};

/// Bytes kept in memory before they are written to the draft.
const BATCH: usize = 256 * 1024;

pub struct Intake {
    spool: Spool,
    id: QueueId,
    /// The envelope, until the draft is created.
    envelope: Option<Envelope>,
    draft: Option<Draft>,
    pending: Vec<u8>,
    /// `From:` rewritten when the sender is (`from_header`); the content signed.
    edits: ContentEdits,
    edited: Vec<u8>,
    headers: HeaderScan,
    lines: LineLength,
    /// For authenticated submissions: add `Date:`/`Message-ID:` when missing, under
    /// this hostname, at the end of the header section.
    fix_headers_for: Option<String>,
    failed: Option<SpoolError>,
}

impl Intake {
    /// Starts the message with `trace` (our `Received:` header). With
    /// `fix_headers_for`, missing `Date:`/`Message-ID:` fields are added; `edits` edit
    /// `From:` and sign what is written.
    pub async fn start(
        spool: &Spool,
        envelope: Envelope,
        trace: String,
        fix_headers_for: Option<String>,
        edits: ContentEdits,
    ) -> Intake {
        let mut pending = Vec::with_capacity(trace.len() + 8192);
        pending.extend_from_slice(trace.as_bytes());
        Intake {
            spool: spool.clone(),
            id: envelope.id,
            envelope: Some(envelope),
            draft: None,
            pending,
            edits,
            edited: Vec::new(),
            headers: HeaderScan::default(),
            lines: LineLength::default(),
            fix_headers_for,
            failed: None,
        }
    }

    pub fn id(&self) -> Option<QueueId> {
        self.failed.is_none().then_some(self.id)
    }

    /// Content bytes as they came (the `From:` edit aside, stored as they are).
    pub async fn push(&mut self, bytes: &[u8]) {
        self.lines.feed(bytes);
        let mut edited = std::mem::take(&mut self.edited);
        edited.clear();
        self.edits.header.push(bytes, &mut edited);
        self.store(&edited).await;
        self.edited = edited;
    }

    async fn store(&mut self, bytes: &[u8]) {
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
            self.write_pending().await;
        }
    }

    fn add_missing_fields(&mut self) {
        if let Some(hostname) = self.fix_headers_for.take() {
            let fields = self.headers.missing_fields(self.id.as_str(), &hostname);
            self.pending.extend_from_slice(fields.as_bytes());
        }
    }

    /// A line of the content is longer than RFC 5322 allows.
    pub(crate) fn line_too_long(&self) -> bool {
        self.lines.too_long()
    }

    /// `Received:` fields seen in the message's header section.
    pub(crate) fn received_count(&self) -> usize {
        self.headers.received()
    }

    /// Writes what is pending to the draft, creating it first if need be.
    async fn write_pending(&mut self) {
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        self.edits.written(&batch);
        let (draft, envelope, spool) =
            (self.draft.take(), self.envelope.take(), self.spool.clone());
        let written = tokio::task::spawn_blocking(move || {
            let mut draft = match draft {
                Some(d) => d,
                None => spool.create_draft(envelope.expect("an envelope until the draft"))?,
            };
            draft.write(&batch)?;
            Ok::<_, SpoolError>(draft)
        })
        .await
        .unwrap_or_else(|e| Err(SpoolError::io("draft task", std::io::Error::other(e))));
        match written {
            Ok(draft) => self.draft = Some(draft),
            Err(e) => self.failed = Some(e), // the draft is dropped, so removed
        }
    }

    /// Makes the message durable: last write, fsync, rename, group commit.
    pub async fn commit(mut self) -> Result<QueueId, SpoolError> {
        let mut held = Vec::new();
        self.edits.header.finish(&mut held);
        self.store(&held).await;
        if !self.headers.ended() {
            // All header, no body: the fields go at the end.
            self.add_missing_fields();
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let (draft, envelope, spool) =
            (self.draft.take(), self.envelope.take(), self.spool.clone());
        let rest = std::mem::take(&mut self.pending);
        let mut edits = std::mem::replace(&mut self.edits, ContentEdits::none());
        let id = self.id;
        let sealed = tokio::task::spawn_blocking(move || -> Result<Sealed, SpoolError> {
            let mut draft = match draft {
                Some(d) => d,
                None => spool.create_draft(envelope.expect("an envelope until the draft"))?,
            };
            draft.write(&rest)?;
            edits.written(&rest);
            draft.seal_prepending(edits.prepend(id.as_str()))
        })
        .await
        .map_err(|e| SpoolError::io("seal task", std::io::Error::other(e)))??;
        self.spool.commit(sealed).await
    }
}
