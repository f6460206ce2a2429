//! The on-disk queue (format: spool/README.md). `Spool` is the handle the rest of the
//! daemon uses: it runs recovery when opened, creates drafts, and commits them through
//! the writer thread, answering success only once a message is durable: file fsynced and
//! renamed into `queue/` (by the producer, `Draft::seal`), `queue/` fsynced and the
//! index transaction committed (by the writer, for a whole group at once).

pub mod claims;
pub mod draft;
pub mod envelope;
pub mod fs;
pub mod id;
pub mod index;
pub mod layout;
pub mod lock;
pub mod maildrop;
mod recovery;
pub mod simfs;
pub mod state;
mod writer;

use std::io;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

pub use draft::{Draft, Sealed};
pub use envelope::{BodyType, Envelope, Origin, Recipient, Ret, StoredMessage, Trailer};
pub use fs::{Fs, RealFs};
pub use id::QueueId;
pub use layout::Layout;
pub use recovery::RecoveryReport;
pub use state::RecipientState;
pub use writer::{Change, ChangeOutcome, Recorded, Selection};

use writer::{Op, Writer};

#[derive(Clone, Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: Arc<io::Error>,
    },
    #[error("spool index: {0}")]
    Index(Arc<rusqlite::Error>),
    #[error("{0}")]
    IndexTooNew(String),
    #[error("the spool writer has stopped")]
    WriterGone,
}

impl SpoolError {
    pub fn io(context: &'static str, source: io::Error) -> SpoolError {
        SpoolError::Io {
            context,
            source: Arc::new(source),
        }
    }

    /// The disk (or quota) is full: SMTP answers `452 4.3.1` rather than `451 4.3.0`.
    pub fn is_no_space(&self) -> bool {
        match self {
            SpoolError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                )
            }
            SpoolError::Index(e) => {
                matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
            }
            SpoolError::IndexTooNew(_) | SpoolError::WriterGone => false,
        }
    }
}

impl From<index::OpenError> for SpoolError {
    fn from(e: index::OpenError) -> Self {
        match e {
            index::OpenError::Sqlite(e) => e.into(),
            too_new @ index::OpenError::TooNew(_) => SpoolError::IndexTooNew(too_new.to_string()),
        }
    }
}

impl From<rusqlite::Error> for SpoolError {
    fn from(e: rusqlite::Error) -> Self {
        SpoolError::Index(Arc::new(e))
    }
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Clone, Copy, Debug)]
pub struct SpoolOptions {
    /// Share one directory fsync and one index transaction among concurrent commits.
    pub group_commit: bool,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions { group_commit: true }
    }
}

/// A shared handle on an open spool. The caller holds the spool lock (`lock::SpoolLock`).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    committed: Arc<tokio::sync::Notify>,
    /// Messages committed since the spool opened (for the metrics).
    accepted: Arc<std::sync::atomic::AtomicU64>,
    fs: Arc<dyn Fs>,
    layout: Layout,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Spool {
    /// Recovers the spool (DESIGN §4) and starts its writer.
    pub fn open(
        layout: Layout,
        fs: Arc<dyn Fs>,
        options: SpoolOptions,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        fs.create_dir_all(&layout.root)
            .map_err(|e| SpoolError::io("create spool directory", e))?;
        let (mut conn, rebuilt) = recovery::open_index(&layout)?;
        let mut report = recovery::recover(fs.as_ref(), &layout, &mut conn)?;
        report.index_rebuilt = rebuilt;
        let committed = Arc::new(tokio::sync::Notify::new());
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = Writer {
            committed: committed.clone(),
            accepted: accepted.clone(),
            fs: fs.clone(),
            layout: layout.clone(),
            conn,
            group_commit: options.group_commit,
        };
        let (ops, thread) = writer
            .spawn()
            .map_err(|e| SpoolError::io("start the spool writer", e))?;
        let spool = Spool {
            inner: Arc::new(Inner {
                committed,
                accepted,
                fs,
                layout,
                ops: Mutex::new(Some(ops)),
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((spool, report))
    }

    /// Rebuilds the index from `queue/` (the spool must not be open), then recovers.
    /// Returns how many messages were indexed.
    pub fn reindex(layout: &Layout, fs: &dyn Fs) -> Result<usize, SpoolError> {
        for dir in layout.dirs() {
            fs.create_dir_all(dir)
                .map_err(|e| SpoolError::io("create spool directory", e))?;
        }
        let count = recovery::rebuild_index(fs, layout)?;
        let (mut conn, _) = recovery::open_index(layout)?;
        recovery::recover(fs, layout, &mut conn)?;
        Ok(count)
    }

    /// Notified after every commit; the scheduler also uses it to be woken by flushes.
    pub fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        self.inner.committed.clone()
    }

    /// Messages committed since the spool opened.
    pub fn accepted(&self) -> u64 {
        self.inner
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.inner.fs
    }

    /// Starts a draft for `envelope` (whose id comes from `QueueId::generate`).
    pub fn create_draft(&self, envelope: Envelope) -> Result<Draft, SpoolError> {
        let layout = &self.inner.layout;
        let (tmp, queued) = (
            layout.draft_path(envelope.id),
            layout.message_path(envelope.id),
        );
        Draft::create(self.inner.fs.clone(), tmp, queued, envelope)
    }

    fn send(&self, op: Op) -> Result<(), SpoolError> {
        let guard = self.inner.ops.lock().expect("spool lock poisoned");
        guard
            .as_ref()
            .ok_or(SpoolError::WriterGone)?
            .send(op)
            .map_err(|_| SpoolError::WriterGone)
    }

    /// Commits a sealed draft; returns once it is durable and indexed.
    pub async fn commit(&self, draft: Sealed) -> Result<QueueId, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Commit {
            draft: Box::new(draft),
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// `commit` for callers outside the async runtime.
    pub fn commit_blocking(&self, draft: Sealed) -> Result<QueueId, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Commit {
            draft: Box::new(draft),
            reply,
        })?;
        rx.blocking_recv().map_err(|_| SpoolError::WriterGone)?
    }

    pub async fn change(&self, change: Change) -> Result<ChangeOutcome, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Change { change, reply })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    pub fn change_blocking(&self, change: Change) -> Result<ChangeOutcome, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Change { change, reply })?;
        rx.blocking_recv().map_err(|_| SpoolError::WriterGone)?
    }

    /// Claims due recipients for delivery (`claims::claim_due`), after adding `clocks`
    /// (online seconds per route) to the route clocks in the same transaction, so the
    /// ages the claims carry are current.
    pub async fn claim(
        &self,
        now: i64,
        lease_secs: i64,
        limit: usize,
        decide: Box<claims::Decide>,
        clocks: Vec<(String, i64)>,
    ) -> Result<Vec<claims::Claim>, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Claim {
            now,
            lease_secs,
            limit,
            decide,
            clocks,
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Records delivery outcomes; messages whose recipients are all final leave the spool.
    pub async fn record(
        &self,
        outcomes: Vec<(QueueId, usize, claims::Recorded)>,
        now: i64,
    ) -> Result<Recorded, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Record {
            outcomes,
            now,
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Makes mail for `domain` due now, held mail included (a flush or ETRN naming it).
    /// Returns how many recipients it concerned.
    pub async fn release_domain(
        &self,
        domain: &str,
        subdomains: bool,
        now: i64,
    ) -> Result<usize, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::ReleaseDomain {
            domain: domain.to_owned(),
            subdomains,
            now,
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Runs `work` on the index in the writer thread; returns its count.
    async fn apply(&self, work: writer::IndexWork) -> Result<usize, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Apply { work, reply })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Mail waiting for `route`'s gate becomes due now: the gate opened.
    pub async fn release_link_wait(&self, route: &str) -> Result<usize, SpoolError> {
        let route = route.to_owned();
        self.apply(Box::new(move |conn| {
            index::release_link_wait(conn, Some(&route), now_unix())
        }))
        .await
    }

    /// Adds online time to route clocks (`claims::advance_clock`), in one transaction.
    pub async fn advance_clocks(&self, clocks: Vec<(String, i64)>) -> Result<usize, SpoolError> {
        self.apply(Box::new(move |conn| {
            let tx = conn.transaction()?;
            let now = now_unix();
            for (route, secs) in &clocks {
                claims::advance_clock(&tx, route, *secs, now)?;
            }
            tx.commit()?;
            Ok(clocks.len())
        }))
        .await
    }

    /// Waiting mail due later than `latest` is due at `latest`: the wall clock went back,
    /// and retries must not freeze for as long.
    pub async fn clamp_due(&self, latest: i64) -> Result<usize, SpoolError> {
        self.apply(Box::new(move |conn| {
            conn.execute(
                "UPDATE recipient SET next_attempt_at = ?1
                 WHERE state IN ('queued', 'deferred') AND next_attempt_at > ?1",
                [latest],
            )
        }))
        .await
    }

    /// Stops the writer after the operations already sent, and waits for it.
    pub fn close(&self) {
        self.inner.ops.lock().expect("spool lock poisoned").take();
        if let Some(thread) = self
            .inner
            .thread
            .lock()
            .expect("spool lock poisoned")
            .take()
        {
            let _ = thread.join();
        }
    }
}
