//! The single writer of the index. It owns the write connection on its own thread and
//! takes operations from a channel. Commits that arrive together form one group (their
//! files already fsynced and renamed into `queue/` by their producers): one fsync of
//! `queue/` and one SQLite transaction cover them all, and only then is each caller
//! answered. With `group_commit` off every commit pays its own directory fsync and
//! transaction (the benchmark's baseline).

use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::claims;
use super::draft::Sealed;
use super::fs::Fs;
use super::index;
use super::layout::Layout;
use super::state::RecipientState;
use super::{SpoolError, StoredMessage, now_unix};
use crate::spool::id::QueueId;

/// Most commits gathered in one group.
const MAX_GROUP: usize = 1024;

/// Which messages an operator's change applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<QueueId>),
}

/// An operator's change to queued messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Waiting recipients (`queued`, `deferred`) become `held`.
    Hold(Selection),
    /// `held` recipients become `queued`, due now.
    Release(Selection),
    /// Waiting recipients (`queued`, `deferred`) are due now, keeping their state.
    Retry(Selection),
    /// The message leaves the spool: file removed, then its rows.
    Delete(Selection),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeOutcome {
    /// Messages the change applied to.
    pub changed: Vec<QueueId>,
    /// Named messages not in the queue.
    pub unknown: Vec<QueueId>,
}

type Reply = oneshot::Sender<Result<QueueId, SpoolError>>;

/// Outcomes to record, and what recording them finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Messages that left the spool: every recipient final.
    pub finished: Vec<QueueId>,
}

/// Work on the index done by the writer thread (the only writer).
pub(crate) type IndexWork = Box<dyn FnOnce(&mut Connection) -> rusqlite::Result<usize> + Send>;

pub(crate) enum Op {
    /// Runs `work` on the index; its count is the reply.
    Apply {
        work: IndexWork,
        reply: oneshot::Sender<Result<usize, SpoolError>>,
    },
    Claim {
        now: i64,
        lease_secs: i64,
        limit: usize,
        decide: Box<claims::Decide>,
        clocks: Vec<(String, i64)>,
        reply: oneshot::Sender<Result<Vec<claims::Claim>, SpoolError>>,
    },
    Record {
        outcomes: Vec<(QueueId, usize, claims::Recorded)>,
        now: i64,
        reply: oneshot::Sender<Result<Recorded, SpoolError>>,
    },
    /// Mail for `domain` (and its subdomains when `subdomains`) becomes due now: `held`
    /// recipients are released, `queued` and `deferred` ones brought forward.
    ReleaseDomain {
        domain: String,
        subdomains: bool,
        now: i64,
        reply: oneshot::Sender<Result<usize, SpoolError>>,
    },
    Commit {
        draft: Box<Sealed>,
        reply: oneshot::Sender<Result<QueueId, SpoolError>>,
    },
    Change {
        change: Change,
        reply: oneshot::Sender<Result<ChangeOutcome, SpoolError>>,
    },
}

pub(crate) struct Writer {
    /// Woken after every successful commit (the scheduler listens).
    pub committed: Arc<tokio::sync::Notify>,
    /// Counts the messages committed.
    pub accepted: Arc<std::sync::atomic::AtomicU64>,
    pub fs: Arc<dyn Fs>,
    pub layout: Layout,
    pub conn: Connection,
    pub group_commit: bool,
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
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            if self.group_commit {
                while ops.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(op) => ops.push(op),
                        Err(_) => break,
                    }
                }
            }
            let mut commits = Vec::new();
            let mut others = Vec::new();
            for op in ops {
                match op {
                    Op::Commit { draft, reply } => commits.push((draft, reply)),
                    other => others.push(other),
                }
            }
            if !commits.is_empty() {
                self.commit_group(commits);
            }
            for op in others {
                match op {
                    Op::Change { change, reply } => {
                        let _ = reply.send(self.apply(change));
                    }
                    Op::Apply { work, reply } => {
                        let _ = reply.send(work(&mut self.conn).map_err(SpoolError::from));
                    }
                    Op::Claim {
                        now,
                        lease_secs,
                        limit,
                        decide,
                        clocks,
                        reply,
                    } => {
                        let _ = reply.send(self.claim(now, lease_secs, limit, decide, &clocks));
                    }
                    Op::Record {
                        outcomes,
                        now,
                        reply,
                    } => {
                        let _ = reply.send(self.record(&outcomes, now));
                    }
                    Op::ReleaseDomain {
                        domain,
                        subdomains,
                        now,
                        reply,
                    } => {
                        let _ = reply.send(self.release_domain(&domain, subdomains, now));
                    }
                    Op::Commit { .. } => unreachable!("sorted out above"),
                }
            }
        }
    }

    fn commit_group(&mut self, group: Vec<(Box<Sealed>, Reply)>) {
        let durable = self
            .fs
            .sync_dir(&self.layout.queue)
            .map_err(|e| SpoolError::io("fsync queue directory", e))
            .and_then(|()| self.index_group(&group));
        match durable {
            Ok(()) => {
                self.committed.notify_one();
                self.accepted
                    .fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for (mut draft, reply) in group {
                    draft.keep();
                    let e = &draft.envelope;
                    tracing::info!(
                        id = %e.id,
                        from = %format_args!("<{}>", e.sender),
                        nrcpt = e.recipients.len(),
                        size = draft.trailer.size,
                        origin = %e.origin.kind,
                        "queued"
                    );
                    let _ = reply.send(Ok(e.id));
                }
            }
            Err(err) => {
                // Never acknowledged, so never to be delivered: dropping each `Sealed`
                // removes its file. A failed fsync is not retried (DESIGN §1).
                tracing::error!(error = %err, count = group.len(), "commit failed; drafts discarded");
                let mut replies = Vec::with_capacity(group.len());
                for (draft, reply) in group {
                    drop(draft);
                    replies.push(reply);
                }
                let _ = self.fs.sync_dir(&self.layout.queue);
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn index_group(&mut self, group: &[(Box<Sealed>, Reply)]) -> Result<(), SpoolError> {
        let now = now_unix();
        let tx = self.conn.transaction()?;
        for (draft, _) in group {
            let stored = StoredMessage {
                envelope: draft.envelope.clone(),
                body_offset: 0,
                trailer: draft.trailer,
            };
            index::insert_message(&tx, &stored, now, &|_, _| None)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn apply(&mut self, change: Change) -> Result<ChangeOutcome, SpoolError> {
        let selection = match &change {
            Change::Hold(s) | Change::Release(s) | Change::Retry(s) | Change::Delete(s) => s,
        };
        let mut outcome = ChangeOutcome::default();
        let ids = match selection {
            Selection::All => index::all_ids(&self.conn)?,
            Selection::Ids(ids) => {
                let mut known = Vec::new();
                for id in ids {
                    if index::contains(&self.conn, *id)? {
                        known.push(*id);
                    } else {
                        outcome.unknown.push(*id);
                    }
                }
                known
            }
        };
        let now = now_unix();
        match change {
            Change::Hold(_) => {
                let from = [RecipientState::Queued, RecipientState::Deferred];
                outcome.changed = self.transition(&ids, &from, RecipientState::Held, None, now)?;
                log_each(&outcome.changed, "held by the operator");
            }
            Change::Release(_) => {
                let from = [RecipientState::Held];
                outcome.changed =
                    self.transition(&ids, &from, RecipientState::Queued, Some(now), now)?;
                log_each(&outcome.changed, "released by the operator");
            }
            Change::Retry(_) => {
                let mut changed = Vec::new();
                for state in [RecipientState::Queued, RecipientState::Deferred] {
                    changed.extend(self.transition(&ids, &[state], state, Some(now), now)?);
                }
                changed.sort();
                changed.dedup();
                outcome.changed = changed;
                log_each(&outcome.changed, "made due now by the operator");
            }
            Change::Delete(_) => {
                self.remove_messages(&ids)?;
                outcome.changed = ids;
                log_each(&outcome.changed, "deleted by the operator");
            }
        }
        Ok(outcome)
    }

    fn claim(
        &mut self,
        now: i64,
        lease_secs: i64,
        limit: usize,
        mut decide: Box<claims::Decide>,
        clocks: &[(String, i64)],
    ) -> Result<Vec<claims::Claim>, SpoolError> {
        let tx = self.conn.transaction()?;
        for (route, secs) in clocks {
            claims::advance_clock(&tx, route, *secs, now)?;
        }
        let claimed = claims::claim_due(&tx, now, lease_secs, limit, decide.as_mut())?;
        tx.commit()?;
        Ok(claimed)
    }

    /// Records outcomes in one transaction, then removes messages now finished.
    fn record(
        &mut self,
        outcomes: &[(QueueId, usize, claims::Recorded)],
        now: i64,
    ) -> Result<Recorded, SpoolError> {
        let tx = self.conn.transaction()?;
        for (id, position, outcome) in outcomes {
            claims::record(&tx, *id, *position, outcome, now)?;
        }
        tx.commit()?;
        let mut touched: Vec<QueueId> = outcomes.iter().map(|(id, _, _)| *id).collect();
        touched.sort();
        touched.dedup();
        let mut finished = Vec::new();
        for id in touched {
            if index::is_finished(&self.conn, id)? {
                finished.push(id);
            }
        }
        if !finished.is_empty() {
            self.remove_messages(&finished)?;
            for id in &finished {
                tracing::info!(id = %id, "removed: every recipient is done");
            }
        }
        Ok(Recorded { finished })
    }

    fn release_domain(
        &mut self,
        domain: &str,
        subdomains: bool,
        now: i64,
    ) -> Result<usize, SpoolError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let pattern = format!("%.{domain}");
        let n = self.conn.execute(
            "UPDATE recipient SET state = CASE state WHEN 'held' THEN 'queued' ELSE state END,
                 next_attempt_at = ?1, updated_at = ?1
             WHERE state IN ('held', 'queued', 'deferred')
               AND (domain = ?2 OR (?3 AND domain LIKE ?4))",
            rusqlite::params![now, domain, subdomains, pattern],
        )?;
        Ok(n)
    }

    fn transition(
        &mut self,
        ids: &[QueueId],
        from: &[RecipientState],
        to: RecipientState,
        next_attempt_at: Option<i64>,
        now: i64,
    ) -> Result<Vec<QueueId>, SpoolError> {
        let tx = self.conn.transaction()?;
        let mut changed = Vec::new();
        for id in ids {
            if index::transition(&tx, *id, from, to, next_attempt_at, now)? > 0 {
                changed.push(*id);
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Removes files first (then one fsync of `queue/`), rows after: a crash in between
    /// leaves rows without files for finished work, which recovery drops quietly, rather
    /// than files without rows, which recovery would queue again.
    fn remove_messages(&mut self, ids: &[QueueId]) -> Result<(), SpoolError> {
        remove_messages(self.fs.as_ref(), &self.layout, &mut self.conn, ids)
    }
}

pub(crate) fn remove_messages(
    fs: &dyn Fs,
    layout: &Layout,
    conn: &mut Connection,
    ids: &[QueueId],
) -> Result<(), SpoolError> {
    for id in ids {
        match fs.remove_file(&layout.message_path(*id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove message file", e)),
        }
    }
    fs.sync_dir(&layout.queue)
        .map_err(|e| SpoolError::io("fsync queue directory", e))?;
    let tx = conn.transaction()?;
    for id in ids {
        index::delete_message(&tx, id.as_str())?;
    }
    tx.commit()?;
    Ok(())
}

fn log_each(ids: &[QueueId], what: &str) {
    for id in ids {
        tracing::info!(id = %id, "{what}");
    }
}
