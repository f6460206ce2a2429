//! Changes to many recipients at once, done a bounded step at a time: an operator's hold,
//! release, retry and delete, a flush's releases, mail released when a gate opens or
//! made to wait when it is closed, a hold route's holds, clock clamps and placement.
//! Each step is one set statement over at most `STEP` recipients (`spool::sets`); the
//! queue owner runs one step between other events, so intake and delivery records go
//! on during a change of any size, and the offline CLI runs the same steps in a row.

use std::collections::{HashSet, VecDeque};

use tokio::sync::oneshot;

use crate::spool::{Action, Placement, QueueId, Scope, Spool, SpoolError};

/// Recipients (or messages) one step changes at most: a few milliseconds of the writer.
pub const STEP: usize = 2000;

/// An operator's change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Waiting recipients (`queued`, `deferred`) become `held`.
    Hold(Scope),
    /// `held` recipients become `queued`, due now.
    Release(Scope),
    /// Recipients waiting for a time are due now.
    Retry(Scope),
    /// Messages leave the spool, without a notice.
    Delete(Scope),
}

impl Change {
    pub fn scope(&self) -> &Scope {
        match self {
            Change::Hold(s) | Change::Release(s) | Change::Retry(s) | Change::Delete(s) => s,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Change::Hold(_) => "held",
            Change::Release(_) => "released",
            Change::Retry(_) => "made due now",
            Change::Delete(_) => "deleted",
        }
    }
}

/// What an operator's change did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeOutcome {
    /// The named messages it changed (listed only when messages were named).
    #[serde(default)]
    pub changed: Vec<QueueId>,
    /// How many messages it changed.
    #[serde(default)]
    pub count: usize,
    /// Named messages not in the queue.
    #[serde(default)]
    pub unknown: Vec<QueueId>,
}

/// Who waits for a job.
pub enum Reply {
    None,
    Change(oneshot::Sender<Result<ChangeOutcome, SpoolError>>),
}

pub enum Job {
    /// Changes over scopes, one after the other.
    Changes {
        todo: VecDeque<Change>,
        /// Who asked, for the log: "the operator", "a flush".
        by: &'static str,
        outcome: ChangeOutcome,
        /// Messages counted so far (a message's recipients may span steps).
        seen: HashSet<QueueId>,
        reply: Reply,
    },
    /// Mail of `route` waiting for its link is due now: all of it, or `domains`' only.
    ReleaseLinkWait {
        route: String,
        domains: Option<VecDeque<String>>,
        /// The run this release serves may end once it is done.
        run: bool,
        /// Recipients released so far, for the log.
        released: usize,
    },
    /// Due mail of `lane` (of `domain` only) waits for its link, with `reason` shown.
    WaitForLink {
        lane: String,
        domain: Option<String>,
        reason: String,
    },
    /// Due mail of `lane` for `domain` is held (a hold route whose domain is not open).
    HoldDue {
        lane: String,
        domain: String,
        reason: String,
    },
    /// Nothing is due later than `latest`.
    Clamp { latest: i64 },
    /// Pending mail of each domain moves to its placement.
    Place { todo: VecDeque<(String, Placement)> },
}

/// What one step did, for the owner's wake list.
#[derive(Debug, Default)]
pub struct Stepped {
    /// The job has nothing more to do.
    pub done: bool,
    /// Lanes whose mail may now be due.
    pub due_now: Vec<String>,
}

impl Job {
    /// An operator's change, answered on `reply` when done. Named messages not in the
    /// queue are reported, and left out.
    pub async fn change(spool: &Spool, change: Change, reply: Reply) -> Result<Job, SpoolError> {
        let mut outcome = ChangeOutcome::default();
        let change = match change {
            Change::Hold(Scope::Ids(ids)) => Change::Hold(known(spool, ids, &mut outcome).await?),
            Change::Release(Scope::Ids(ids)) => {
                Change::Release(known(spool, ids, &mut outcome).await?)
            }
            Change::Retry(Scope::Ids(ids)) => Change::Retry(known(spool, ids, &mut outcome).await?),
            Change::Delete(Scope::Ids(ids)) => {
                Change::Delete(known(spool, ids, &mut outcome).await?)
            }
            other => other,
        };
        Ok(Job::Changes {
            todo: VecDeque::from([change]),
            by: "the operator",
            outcome,
            seen: HashSet::new(),
            reply,
        })
    }

    /// Runs one step.
    pub async fn step(&mut self, spool: &Spool) -> Result<Stepped, SpoolError> {
        match self {
            Job::Changes {
                todo,
                by,
                outcome,
                seen,
                ..
            } => change_step(spool, todo, by, outcome, seen).await,
            Job::ReleaseLinkWait {
                route,
                domains,
                released,
                ..
            } => release_step(spool, route, domains, released).await,
            Job::WaitForLink {
                lane,
                domain,
                reason,
            } => {
                let batch = spool
                    .wait_for_link(lane, domain.as_deref(), reason, STEP)
                    .await?;
                Ok(Stepped {
                    done: !batch.more,
                    due_now: Vec::new(),
                })
            }
            Job::HoldDue {
                lane,
                domain,
                reason,
            } => {
                let batch = spool.hold_due(lane, domain, reason, STEP).await?;
                Ok(Stepped {
                    done: !batch.more,
                    due_now: Vec::new(),
                })
            }
            Job::Clamp { latest } => {
                let batch = spool.clamp_due(*latest, STEP).await?;
                if batch.changed > 0 {
                    tracing::info!(
                        recipients = batch.changed,
                        "retries brought back within retry.max"
                    );
                }
                Ok(Stepped {
                    done: !batch.more,
                    due_now: batch.lanes,
                })
            }
            Job::Place { todo } => {
                let Some((domain, placement)) = todo.front() else {
                    return Ok(done(Vec::new()));
                };
                let batch = spool.place(domain, placement, STEP).await?;
                if !batch.more {
                    todo.pop_front();
                }
                Ok(Stepped {
                    done: todo.is_empty(),
                    due_now: batch.lanes,
                })
            }
        }
    }

    /// Answers whoever waits for the job.
    pub fn finish(self, result: Result<(), SpoolError>) {
        if let Job::Changes {
            outcome,
            reply: Reply::Change(tx),
            ..
        } = self
        {
            let _ = tx.send(result.map(|()| outcome));
        }
    }

    /// The lane a job works on, which the owner leaves alone meanwhile.
    pub(crate) fn lane(&self) -> Option<&str> {
        match self {
            Job::WaitForLink { lane, .. } | Job::HoldDue { lane, .. } => Some(lane),
            _ => None,
        }
    }

    /// The route whose run a job serves.
    pub(crate) fn run_route(&self) -> Option<&str> {
        match self {
            Job::ReleaseLinkWait {
                route, run: true, ..
            } => Some(route),
            _ => None,
        }
    }
}

/// One step of a job of changes: the first change's next batch of recipients.
async fn change_step(
    spool: &Spool,
    todo: &mut VecDeque<Change>,
    by: &str,
    outcome: &mut ChangeOutcome,
    seen: &mut HashSet<QueueId>,
) -> Result<Stepped, SpoolError> {
    let Some(change) = todo.front().cloned() else {
        return Ok(done(Vec::new()));
    };
    let batch = match &change {
        Change::Delete(scope) => spool.delete(scope, STEP).await?,
        Change::Hold(scope) => spool.apply(Action::Hold, scope, STEP).await?,
        Change::Release(scope) => spool.apply(Action::Release, scope, STEP).await?,
        Change::Retry(scope) => spool.apply(Action::Retry, scope, STEP).await?,
    };
    let named = matches!(change.scope(), Scope::Ids(_));
    for id in &batch.messages {
        if seen.insert(*id) {
            outcome.count += 1;
            if named {
                outcome.changed.push(*id);
                tracing::info!(id = %id, "{} by {by}", change.verb());
            }
        }
    }
    if !batch.more {
        if !named && outcome.count > 0 {
            tracing::info!(messages = outcome.count, "{} by {by}", change.verb());
        }
        todo.pop_front();
    }
    let due_now = match change {
        Change::Hold(_) | Change::Delete(_) => Vec::new(),
        _ => batch.lanes,
    };
    Ok(Stepped {
        done: todo.is_empty(),
        due_now,
    })
}

/// One step of a release of mail waiting for `route`'s link: the next batch of it, or
/// of the first domain's in `domains`.
async fn release_step(
    spool: &Spool,
    route: &str,
    domains: &mut Option<VecDeque<String>>,
    released: &mut usize,
) -> Result<Stepped, SpoolError> {
    let domain = match domains {
        None => None,
        Some(list) => match list.front() {
            Some(d) => Some(d.clone()),
            None => return Ok(done(Vec::new())),
        },
    };
    let batch = spool
        .release_link_wait(route, domain.as_deref(), STEP)
        .await?;
    *released += batch.changed;
    let finished = match (batch.more, domains) {
        (true, _) => false,
        (false, None) => true,
        (false, Some(list)) => {
            list.pop_front();
            list.is_empty()
        }
    };
    if finished && *released > 0 {
        tracing::info!(route = %route, released = *released, "gate open: waiting mail is due now");
    }
    Ok(Stepped {
        done: finished,
        due_now: batch.lanes,
    })
}

fn done(due_now: Vec<String>) -> Stepped {
    Stepped {
        done: true,
        due_now,
    }
}

/// The named messages that are in the queue; the others go to `outcome.unknown`.
async fn known(
    spool: &Spool,
    ids: Vec<QueueId>,
    outcome: &mut ChangeOutcome,
) -> Result<Scope, SpoolError> {
    let (known, unknown) = spool.known_ids(ids).await?;
    outcome.unknown = unknown;
    Ok(Scope::Ids(known))
}

/// Carries out an operator's change at once, step after step (the CLI, with no daemon).
pub async fn apply(spool: &Spool, change: Change) -> Result<ChangeOutcome, SpoolError> {
    let (tx, rx) = oneshot::channel();
    let mut job = Job::change(spool, change, Reply::Change(tx)).await?;
    let result = loop {
        match job.step(spool).await {
            Ok(s) if s.done => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    job.finish(result);
    rx.await.map_err(|_| SpoolError::WriterGone)?
}
