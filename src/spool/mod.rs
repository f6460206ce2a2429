//! The on-disk queue (format: spool/README.md). `Spool` is the handle the rest of the
//! daemon uses: it runs recovery when opened, creates drafts, and commits them through
//! the writer thread, answering success only once a message is durable: file fsynced and
//! renamed into `queue/` (by the producer, `Draft::seal`), `queue/` fsynced and the
//! index transaction committed (by the writer, for a whole group at once).

pub mod bundles;
pub mod claims;
pub mod draft;
pub mod envelope;
pub mod fs;
pub mod id;
pub mod index;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod maildrop;
pub mod reader;
pub(crate) mod recovery;
mod removal;
pub mod sets;
#[cfg(any(test, feature = "testkit"))]
pub mod simfs;
pub mod state;
mod writer;

use std::io;
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

pub use draft::{Draft, Sealed};
pub use envelope::{BundleOrigin, Envelope, Origin, OriginKind, Recipient, StoredMessage, Trailer};
pub use fs::{Fs, RealFs};
pub use id::QueueId;
pub use index::{Place, Placement, Wait};
pub use layout::Layout;
pub use reader::IndexReader;
pub use recovery::RecoveryReport;
pub use sets::{Action, Batch, Scope};
pub use state::RecipientState;
pub use writer::{Damaged, Outcomes};

use claims::Claim;
use writer::{Finish, Op, Writer};

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
    pub(crate) fn is_no_space(&self) -> bool {
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

pub use crate::clock::now_unix;

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
    /// Messages committed since the spool opened (for the metrics).
    accepted: Arc<std::sync::atomic::AtomicU64>,
    fs: Arc<dyn Fs>,
    layout: Layout,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Spool {
    /// Recovers the spool (spool/README.md) and starts its writer.
    pub fn open(
        layout: Layout,
        fs: Arc<dyn Fs>,
        options: SpoolOptions,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        fs.create_dir_all(&layout.root)
            .map_err(|e| SpoolError::io("create spool directory", e))?;
        let (mut conn, rebuilt) = recovery::open_index(&layout)?;
        let (journal, mut report) = recovery::recover(&fs, &layout, &mut conn)?;
        report.index_rebuilt = rebuilt;
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = Writer {
            accepted: accepted.clone(),
            fs: fs.clone(),
            layout: layout.clone(),
            conn,
            journal,
            group_commit: options.group_commit,
            place: None,
            due: None,
        };
        let (ops, thread) = writer
            .spawn()
            .map_err(|e| SpoolError::io("start the spool writer", e))?;
        let spool = Spool {
            inner: Arc::new(Inner {
                accepted,
                fs,
                layout,
                ops: Mutex::new(Some(ops)),
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((spool, report))
    }

    /// Rebuilds the index from `queue/` (the spool must not be open), replays the
    /// outcome journal onto it, then recovers. Returns how many messages were indexed.
    pub fn reindex(layout: &Layout, fs: Arc<dyn Fs>) -> Result<usize, SpoolError> {
        for dir in layout.dirs() {
            fs.create_dir_all(dir)
                .map_err(|e| SpoolError::io("create spool directory", e))?;
        }
        let count = recovery::rebuild_index(fs.as_ref(), layout)?;
        let (mut conn, _) = recovery::open_index(layout)?;
        recovery::recover(&fs, layout, &mut conn)?;
        Ok(count)
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

    /// From now on, committed mail is placed by `place`; the lanes of mail due at once
    /// are sent to `due` after each commit.
    pub(crate) fn set_placement(
        &self,
        place: Arc<Place>,
        due: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    ) -> Result<(), SpoolError> {
        self.send(Op::Place { place, due })
    }

    /// Records a delivery's outcomes, with the notices they send, in one transaction;
    /// returns once they are durable. Messages they finish then leave the spool.
    pub async fn record(&self, outcomes: Outcomes) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Record { outcomes, reply })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Runs `f` on the index in the writer's next group, inside a savepoint; answers
    /// once the group has committed.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Run(Box::new(move |conn: &Connection| {
            let result = f(conn);
            let done = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let _ = reply.send(match (result, committed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e.into()),
                    (Ok(_), Err(e)) => Err(e),
                });
            });
            (done, finish)
        })))?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Claims up to `limit` due recipients of `lane` (of `domain` only, when given),
    /// after adding `clocks` (online seconds per route) to the route clocks, so the ages
    /// the claims carry are current.
    pub async fn claim(
        &self,
        lane: &str,
        domain: Option<&str>,
        limit: usize,
        clocks: Vec<(String, i64)>,
    ) -> Result<Vec<Claim>, SpoolError> {
        let (lane, domain) = (lane.to_owned(), domain.map(str::to_owned));
        self.run(move |conn| {
            let now = now_unix();
            for (route, secs) in &clocks {
                claims::advance_clock(conn, route, *secs, now)?;
            }
            claims::claim(conn, &lane, domain.as_deref(), now, limit)
        })
        .await
    }

    /// Claims of `lane` a delivery left unrecorded are due again now.
    pub async fn release_claims(&self, lane: &str) -> Result<usize, SpoolError> {
        let lane = lane.to_owned();
        self.run(move |conn| claims::release_claims(conn, &lane, now_unix()))
            .await
    }

    /// When `lane`'s next recipient is due, if any waits for a time.
    pub async fn lane_next_due(&self, lane: &str) -> Result<Option<i64>, SpoolError> {
        let lane = lane.to_owned();
        self.run(move |conn| claims::lane_next_due(conn, &lane))
            .await
    }

    /// Every lane with mail waiting for a time, with when it is first due.
    pub async fn due_lanes(&self) -> Result<Vec<(String, i64)>, SpoolError> {
        self.run(claims::due_lanes).await
    }

    /// The domains with mail waiting on `lane` for an ODMR turn.
    pub async fn turn_domains(&self, lane: &str) -> Result<Vec<String>, SpoolError> {
        let lane = lane.to_owned();
        self.run(move |conn| claims::turn_domains(conn, &lane))
            .await
    }

    /// Claims `domain`'s waiting mail on `lane` for an ODMR turn (at most `limit`
    /// messages' worth).
    pub async fn claim_turn(
        &self,
        lane: &str,
        domain: &str,
        limit: usize,
    ) -> Result<Vec<Claim>, SpoolError> {
        let (lane, domain) = (lane.to_owned(), domain.to_owned());
        self.run(move |conn| claims::claim_turn(conn, &lane, &domain, now_unix(), limit))
            .await
    }

    /// Claims the waiting mail of up to `limit` messages on `route` for a bundle.
    pub async fn claim_for_bundle(
        &self,
        route: &str,
        limit: usize,
    ) -> Result<Vec<Claim>, SpoolError> {
        let route = route.to_owned();
        self.run(move |conn| bundles::claim_route(conn, &route, now_unix(), limit))
            .await
    }

    /// Claimed recipients written into `bundle`: `bundled` until `until`.
    pub async fn mark_bundled(
        &self,
        recipients: Vec<(QueueId, usize)>,
        bundle: String,
        until: i64,
    ) -> Result<usize, SpoolError> {
        self.run(move |conn| bundles::mark_bundled(conn, &recipients, &bundle, until, now_unix()))
            .await
    }

    /// Bundled mail whose receipt is overdue goes back to the queue (a bounded step);
    /// returns the lanes it is due on.
    pub async fn release_bundled(&self, limit: usize) -> Result<Vec<String>, SpoolError> {
        self.run(move |conn| bundles::release_bundled(conn, now_unix(), limit))
            .await
    }

    /// When the next bundled recipient's receipt is overdue.
    pub async fn next_bundle_due(&self) -> Result<Option<i64>, SpoolError> {
        self.run(bundles::next_bundle_due).await
    }

    /// Claims the recipients a receipt names that still wait for one.
    pub async fn claim_named(
        &self,
        recipients: Vec<(QueueId, usize)>,
    ) -> Result<Vec<Claim>, SpoolError> {
        self.run(move |conn| bundles::claim_named(conn, &recipients, now_unix()))
            .await
    }

    /// The domains with mail due now on `lane`.
    pub async fn due_domains(&self, lane: &str) -> Result<Vec<String>, SpoolError> {
        let lane = lane.to_owned();
        self.run(move |conn| claims::due_domains(conn, &lane, now_unix()))
            .await
    }

    /// One step (at most `limit` recipients) of an operator's change over `scope`.
    pub async fn apply(
        &self,
        action: Action,
        scope: &Scope,
        limit: usize,
    ) -> Result<Batch, SpoolError> {
        let scope = scope.clone();
        self.run(move |conn| sets::apply(conn, action, &scope, now_unix(), limit))
            .await
    }

    /// One step of deleting `scope`: at most `limit` messages leave the spool, without
    /// a notice.
    pub async fn delete(&self, scope: &Scope, limit: usize) -> Result<Batch, SpoolError> {
        let scope = scope.clone();
        let ids = self
            .run(move |conn| sets::messages_in(conn, &scope, limit))
            .await?;
        let (reply, rx) = oneshot::channel();
        self.send(Op::Remove {
            ids: ids.clone(),
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)??;
        Ok(Batch {
            changed: ids.len(),
            more: ids.len() == limit,
            messages: ids,
            lanes: Vec::new(),
        })
    }

    /// One step of releasing mail of `route` (of `domain` only, when given) that waits
    /// for the link: the gate opened.
    pub async fn release_link_wait(
        &self,
        route: &str,
        domain: Option<&str>,
        limit: usize,
    ) -> Result<Batch, SpoolError> {
        let (route, domain) = (route.to_owned(), domain.map(str::to_owned));
        self.run(move |conn| {
            sets::release_link_wait(conn, &route, domain.as_deref(), now_unix(), limit)
        })
        .await
    }

    /// One step of making due mail of `lane` (of `domain` only) wait for its link.
    pub async fn wait_for_link(
        &self,
        lane: &str,
        domain: Option<&str>,
        reason: &str,
        limit: usize,
    ) -> Result<Batch, SpoolError> {
        let (lane, domain, reason) = (
            lane.to_owned(),
            domain.map(str::to_owned),
            reason.to_owned(),
        );
        self.run(move |conn| {
            sets::wait_for_link(conn, &lane, domain.as_deref(), &reason, now_unix(), limit)
        })
        .await
    }

    /// One step of holding due mail of `lane` for `domain` (a hold route, not open).
    pub async fn hold_due(
        &self,
        lane: &str,
        domain: &str,
        reason: &str,
        limit: usize,
    ) -> Result<Batch, SpoolError> {
        let (lane, domain, reason) = (lane.to_owned(), domain.to_owned(), reason.to_owned());
        self.run(move |conn| sets::hold_due(conn, &lane, &domain, &reason, now_unix(), limit))
            .await
    }

    /// One step of bringing mail due after `latest` back to `latest`.
    pub async fn clamp_due(&self, latest: i64, limit: usize) -> Result<Batch, SpoolError> {
        self.run(move |conn| sets::clamp_due(conn, latest, limit))
            .await
    }

    /// One step of moving `domain`'s pending mail to `placement`.
    pub async fn place(
        &self,
        domain: &str,
        placement: &Placement,
        limit: usize,
    ) -> Result<Batch, SpoolError> {
        let (domain, placement) = (domain.to_owned(), placement.clone());
        self.run(move |conn| sets::place(conn, &domain, &placement, limit))
            .await
    }

    /// Each domain with pending mail, with the lanes its mail is on.
    pub async fn placed_domains(&self) -> Result<Vec<(String, Option<String>)>, SpoolError> {
        self.run(sets::placed_domains).await
    }

    /// `ids` split into those in the queue and those not.
    pub async fn known_ids(
        &self,
        ids: Vec<QueueId>,
    ) -> Result<(Vec<QueueId>, Vec<QueueId>), SpoolError> {
        self.run(move |conn| {
            let (mut known, mut unknown) = (Vec::new(), Vec::new());
            for id in ids {
                if index::contains(conn, id)? {
                    known.push(id);
                } else {
                    unknown.push(id);
                }
            }
            Ok((known, unknown))
        })
        .await
    }

    /// Some recipient still needs delivery (or is held).
    pub async fn anything_pending(&self) -> Result<bool, SpoolError> {
        self.run(claims::anything_pending).await
    }

    /// The positions of `id`'s recipients not yet final.
    pub async fn pending_positions(&self, id: QueueId) -> Result<Vec<usize>, SpoolError> {
        self.run(move |conn| claims::pending_positions(conn, id))
            .await
    }

    /// Adds online time to route clocks, in one transaction.
    pub async fn advance_clocks(&self, clocks: Vec<(String, i64)>) -> Result<(), SpoolError> {
        self.run(move |conn| {
            let now = now_unix();
            for (route, secs) in &clocks {
                claims::advance_clock(conn, route, *secs, now)?;
            }
            Ok(())
        })
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
