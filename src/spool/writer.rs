//! The single writer of the index. It owns the write connection on its own thread and
//! takes operations from a channel. Everything that arrives together forms one group,
//! made durable at once: one fsync of `queue/` for the new files among it (committed
//! messages, whose producers already fsynced and renamed them, and notices), one append
//! to the outcome journal for the final outcomes among it, and one SQLite transaction
//! for all of its rows, each operation inside its own savepoint. Only then is each
//! caller answered. Messages finished meanwhile leave the spool in batches, once the
//! writer is idle: files first, rows after. With `group_commit` off every operation pays
//! for itself (the benchmark's baseline).

use std::collections::BTreeSet;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::claims::{self, Verdict};
use super::draft::Sealed;
use super::fs::Fs;
use super::id::QueueId;
use super::index::{self, Place};
use super::journal::{Entry, Fact, Journal};
use super::layout::Layout;
use super::removal::{quarantine_file, remove_messages};
use super::state::RecipientState;
use super::{SpoolError, StoredMessage, now_unix};

/// Most operations gathered in one group.
const MAX_GROUP: usize = 1024;
/// Finished messages are removed in batches: when the writer has been idle this long,
/// or when this many wait. (Removal costs a directory fsync and a transaction; a
/// finished message waiting for it is already done in the index.)
const REMOVE_AFTER_IDLE: Duration = Duration::from_millis(20);
const REMOVE_BATCH: usize = 512;

/// Work on the index inside the group's transaction. It returns whether it succeeded (if
/// not, its changes are undone) and what to do once the transaction has committed or
/// failed: answer its caller.
pub(crate) type Work = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
pub(crate) type Finish = Box<dyn FnOnce(Result<(), SpoolError>) + Send>;

/// What a delivery's outcomes call for: records, the notices they send (committed in
/// the same transaction, so a bounce is never recorded without its notice nor a notice
/// queued without its bounce), and damaged files to quarantine, whose pending
/// recipients (at the positions given) all bounce.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub records: Vec<(QueueId, usize, Verdict)>,
    pub notices: Vec<Sealed>,
    pub damaged: Vec<Damaged>,
    /// Messages kept although finished: notices nobody could receive (double bounces).
    pub keep: Vec<QueueId>,
}

#[derive(Clone, Debug)]
pub struct Damaged {
    pub id: QueueId,
    /// Why the file is damaged, for the log and the recipients' last reply.
    pub reason: String,
    pub positions: Vec<usize>,
}

pub(crate) enum Op {
    Commit {
        draft: Box<Sealed>,
        reply: oneshot::Sender<Result<QueueId, SpoolError>>,
    },
    Record {
        outcomes: Outcomes,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    Run(Work),
    /// Removes whole messages (an operator's delete): files first, then rows.
    Remove {
        ids: Vec<QueueId>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// From now on, committed mail is placed by `place`, and the lanes of what is due at
    /// once go to `due`.
    Place {
        place: Arc<Place>,
        due: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    },
}

pub(crate) struct Writer {
    /// Counts the messages committed.
    pub accepted: Arc<std::sync::atomic::AtomicU64>,
    pub fs: Arc<dyn Fs>,
    pub layout: Layout,
    pub conn: Connection,
    pub journal: Journal,
    pub group_commit: bool,
    pub place: Option<Arc<Place>>,
    pub due: Option<tokio::sync::mpsc::UnboundedSender<Vec<String>>>,
}

/// Where an operation's answer goes.
type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

/// One group's operations, sorted by what they need.
#[derive(Default)]
struct Group {
    commits: Vec<(Box<Sealed>, Reply<QueueId>)>,
    records: Vec<(Outcomes, Reply<()>)>,
    work: Vec<Work>,
    removes: Vec<(Vec<QueueId>, Reply<()>)>,
}

impl Writer {
    pub fn spawn(self) -> std::io::Result<(mpsc::Sender<Op>, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || self.run(rx))?;
        Ok((tx, handle))
    }

    fn run(mut self, rx: mpsc::Receiver<Op>) {
        let mut finished = BTreeSet::new();
        loop {
            let first = if finished.is_empty() {
                rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(REMOVE_AFTER_IDLE)
            };
            let first = match first {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.remove_finished(std::mem::take(&mut finished));
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut ops = vec![first];
            if self.group_commit {
                while ops.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(op) => ops.push(op),
                        Err(_) => break,
                    }
                }
            }
            let mut group = Group::default();
            for op in ops {
                match op {
                    Op::Commit { draft, reply } => group.commits.push((draft, reply)),
                    Op::Record { outcomes, reply } => group.records.push((outcomes, reply)),
                    Op::Run(work) => group.work.push(work),
                    Op::Remove { ids, reply } => group.removes.push((ids, reply)),
                    Op::Place { place, due } => {
                        self.place = Some(place);
                        self.due = Some(due);
                    }
                }
            }
            finished.extend(self.write_group(group));
            if finished.len() >= REMOVE_BATCH {
                self.remove_finished(std::mem::take(&mut finished));
            }
        }
        self.remove_finished(finished);
    }

    /// Writes one group; returns the messages it may have finished, to be removed.
    fn write_group(&mut self, mut group: Group) -> BTreeSet<QueueId> {
        let quarantined = self.quarantine(&group.records);
        let files =
            !group.commits.is_empty() || group.records.iter().any(|(o, _)| !o.notices.is_empty());
        if files
            && let Err(e) = self
                .fs
                .sync_dir(&self.layout.queue)
                .map_err(|e| SpoolError::io("fsync queue directory", e))
        {
            // The new files' names may not be durable: none of them is acknowledged.
            fail(std::mem::take(&mut group.commits), &e);
            fail(std::mem::take(&mut group.records), &e);
            let _ = self.fs.sync_dir(&self.layout.queue);
        }
        let entries = journal_entries(&group.records);
        if let Err(e) = self.append_journal(&entries) {
            // Final outcomes not in the journal are not recorded at all.
            fail(std::mem::take(&mut group.records), &e);
        }
        let (records, record_replies): (Vec<Outcomes>, Vec<_>) = group.records.into_iter().unzip();
        let now = now_unix();
        let mut finishes = Vec::with_capacity(group.work.len());
        let mut due_lanes = BTreeSet::new();
        let mut touched = BTreeSet::new();
        let mut record_results = Vec::with_capacity(records.len());
        let place = self.place.clone();
        let journal = &self.journal;
        let result = (|| -> Result<(), SpoolError> {
            let tx = self.conn.transaction()?;
            for (draft, _) in &group.commits {
                insert(&tx, draft, now, place.as_deref(), &mut due_lanes)?;
            }
            for outcomes in &records {
                record_results.push(in_savepoint_result(&tx, |tx| {
                    record(
                        tx,
                        outcomes,
                        now,
                        place.as_deref(),
                        &mut due_lanes,
                        &mut touched,
                    )
                }));
            }
            for work in group.work {
                finishes.push(in_savepoint(&tx, work));
            }
            if !entries.is_empty() {
                journal.mark_applied(&tx)?;
            }
            tx.commit()?;
            Ok(())
        })();
        match &result {
            Ok(()) => {
                self.accepted.fetch_add(
                    group.commits.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                for (mut draft, reply) in group.commits {
                    draft.keep();
                    log_queued(&draft);
                    let _ = reply.send(Ok(draft.envelope.id));
                }
                if record_results.iter().any(Result::is_err) {
                    self.forget_unrecorded_journal();
                }
                for ((mut outcomes, reply), recorded) in
                    records.into_iter().zip(record_replies).zip(record_results)
                {
                    if recorded.is_ok() {
                        for notice in &mut outcomes.notices {
                            notice.keep();
                            log_queued(notice);
                        }
                    }
                    let _ = reply.send(recorded);
                }
                if let (Some(due), false) = (&self.due, due_lanes.is_empty()) {
                    let _ = due.send(due_lanes.into_iter().collect());
                }
            }
            Err(err) => {
                if !entries.is_empty() {
                    self.forget_unrecorded_journal();
                }
                // Never acknowledged, so never to be delivered: dropping each `Sealed`
                // removes its file. A failed fsync is not retried (spool/README.md).
                tracing::error!(error = %err, commits = group.commits.len(), "index transaction failed; drafts discarded");
                fail(group.commits, err);
                drop(records);
                let _ = self.fs.sync_dir(&self.layout.queue);
                for reply in record_replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
        for finish in finishes {
            finish(result.clone());
        }
        for (ids, reply) in group.removes {
            let removed = remove_messages(self.fs.as_ref(), &self.layout, &mut self.conn, &ids);
            let _ = reply.send(removed);
        }
        if result.is_err() {
            touched.clear();
        }
        touched.extend(quarantined);
        touched
    }

    /// Outcomes were appended to the journal but not recorded in the index (their
    /// transaction failed): the journal is rewritten from the index at once, so a later
    /// replay cannot record a bounce whose notice was never queued.
    fn forget_unrecorded_journal(&mut self) {
        if let Err(e) = self.journal.rewrite(&self.conn) {
            tracing::error!(error = %e, "rewriting the journal failed; it is rewritten before the next append");
            self.journal.mark_broken();
        }
    }

    fn append_journal(&mut self, entries: &[Entry]) -> Result<(), SpoolError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.journal.needs_rewrite() {
            self.journal.rewrite(&self.conn)?;
        }
        self.journal.append(entries)
    }

    /// Moves damaged files to `corrupt/` (logged); returns their ids, whose rows go once
    /// their recipients are recorded.
    fn quarantine(&self, records: &[(Outcomes, Reply<()>)]) -> Vec<QueueId> {
        let mut moved = Vec::new();
        for (outcomes, _) in records.iter() {
            for d in &outcomes.damaged {
                let path = self.layout.message_path(d.id);
                match quarantine_file(
                    self.fs.as_ref(),
                    &self.layout,
                    &path,
                    d.id.as_str(),
                    &d.reason,
                ) {
                    Ok(()) => moved.push(d.id),
                    Err(e) => {
                        tracing::error!(id = %d.id, error = %e, "could not quarantine a damaged message file")
                    }
                }
            }
        }
        moved
    }

    /// Removes the messages among `ids` whose recipients are all final.
    fn remove_finished(&mut self, ids: BTreeSet<QueueId>) {
        let mut finished = Vec::new();
        for id in ids {
            match index::is_finished(&self.conn, id) {
                Ok(true) => finished.push(id),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(id = %id, error = %e, "checking whether a message is done failed")
                }
            }
        }
        if finished.is_empty() {
            return;
        }
        match remove_messages(self.fs.as_ref(), &self.layout, &mut self.conn, &finished) {
            Ok(()) => {
                for id in &finished {
                    tracing::info!(id = %id, "removed: every recipient is done");
                }
            }
            // Left for the next start's recovery, which removes finished messages.
            Err(e) => tracing::error!(error = %e, "removing finished messages failed"),
        }
    }
}

/// Answers operations that could not be made durable; dropping what they carry removes
/// their files.
fn fail<T, R>(ops: Vec<(T, Reply<R>)>, err: &SpoolError) {
    for (op, reply) in ops {
        drop(op);
        let _ = reply.send(Err(err.clone()));
    }
}

/// Runs `f` inside a savepoint, undoing its changes when it fails.
fn in_savepoint_result(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<(), SpoolError>,
) -> Result<(), SpoolError> {
    tx.execute_batch("SAVEPOINT op")?;
    let result = f(tx);
    let end = if result.is_ok() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    tx.execute_batch(end)?;
    result
}

/// Runs `work` inside a savepoint: when it fails, its changes are undone and the rest
/// of the group's transaction goes on.
fn in_savepoint(tx: &Transaction<'_>, work: Work) -> Finish {
    if let Err(e) = tx.execute_batch("SAVEPOINT op") {
        let e = SpoolError::from(e);
        return Box::new(move |_| tracing::error!(error = %e, "index savepoint failed"));
    }
    let (done, finish) = work(tx);
    let end = if done {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    if let Err(e) = tx.execute_batch(end) {
        tracing::error!(error = %e, "index savepoint could not end");
    }
    finish
}

fn insert(
    tx: &Connection,
    draft: &Sealed,
    now: i64,
    place: Option<&Place>,
    due_lanes: &mut BTreeSet<String>,
) -> Result<(), SpoolError> {
    let stored = StoredMessage {
        envelope: draft.envelope.clone(),
        body_offset: 0,
        trailer: draft.trailer,
        prepend: draft.prepend.clone(),
    };
    let placed = index::insert_message(tx, &stored, now, place, &|_, _| None)?;
    due_lanes.extend(placed);
    Ok(())
}

fn record(
    tx: &Connection,
    outcomes: &Outcomes,
    now: i64,
    place: Option<&Place>,
    due_lanes: &mut BTreeSet<String>,
    touched: &mut BTreeSet<QueueId>,
) -> Result<(), SpoolError> {
    for notice in &outcomes.notices {
        insert(tx, notice, now, place, due_lanes)?;
    }
    for (id, position, outcome) in &outcomes.records {
        claims::record(tx, *id, *position, outcome, now)?;
        touched.insert(*id);
    }
    for id in &outcomes.keep {
        index::keep_message(tx, *id)?;
    }
    for d in &outcomes.damaged {
        let bounced = Verdict::Bounced {
            reply: format!(
                "the message file is damaged ({}); moved to corrupt/",
                d.reason
            ),
            host: None,
        };
        for position in &d.positions {
            claims::fail_pending(tx, d.id, *position, &bounced, now)?;
        }
        touched.insert(d.id);
    }
    Ok(())
}

/// The journal facts among a group's outcomes.
fn journal_entries(records: &[(Outcomes, Reply<()>)]) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (outcomes, _) in records {
        for (id, position, outcome) in &outcomes.records {
            let fact = match outcome {
                Verdict::Deferred { warned: true, .. } => Fact::Warned,
                Verdict::Deferred { .. } => continue,
                other => Fact::Final(other.state()),
            };
            entries.push(Entry {
                id: *id,
                position: *position,
                fact,
            });
        }
        for d in &outcomes.damaged {
            entries.extend(d.positions.iter().map(|p| Entry {
                id: d.id,
                position: *p,
                fact: Fact::Final(RecipientState::Bounced),
            }));
        }
        entries.extend(outcomes.keep.iter().map(|id| Entry {
            id: *id,
            position: 0,
            fact: Fact::Kept,
        }));
    }
    entries
}

fn log_queued(draft: &Sealed) {
    let e = &draft.envelope;
    tracing::info!(
        id = %e.id,
        from = %format_args!("<{}>", e.sender),
        nrcpt = e.recipients.len(),
        size = draft.trailer.size + draft.prepend.len() as u64,
        origin = %e.origin.kind,
        "queued"
    );
}
