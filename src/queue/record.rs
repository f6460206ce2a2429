//! Recording what a delivery answered, off the owner's loop: what each result means
//! (`settle`), the notices it calls for, written from the spool files on a blocking
//! thread (`notices`), damaged files' notices and quarantine, then one spool record that
//! commits the outcomes with their notices, and keeps the double bounces nobody can
//! receive. The runner that answered is told once they are durable, which moves its
//! pipelining window.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::kit::Kit;
use super::lane::Lane;
use super::notices::{Built, Fate, NoticeSettings};
use super::retry::RetryPolicy;
use super::settle::{self, NoticeRequest, SettleRules, without_notice};
use crate::delivery::dsn::{Action, Line, NoticeKind};
use crate::delivery::runner::Answered;
use crate::spool::{Damaged, Outcomes, QueueId, Spool, now_unix};

/// Decides what `answered` means and records it, with its notices; `reply` once it is
/// durable.
pub fn record(
    kit: &Kit,
    retry: &RetryPolicy,
    settings: &Arc<NoticeSettings>,
    lane: &Lane,
    answered: Answered,
    reply: oneshot::Sender<()>,
) {
    let policy = SettleRules {
        retry,
        soon: kit.link.probe_interval(&lane.route),
    };
    let relayed: HashSet<(QueueId, usize)> = answered.relayed.iter().copied().collect();
    let now = now_unix();
    let settled = settle::settle(
        &policy,
        answered.results,
        answered.host.as_deref(),
        &|c| relayed.contains(&(c.message_id, c.position)),
        now,
        settle::jitter(),
    );
    for (counted, n) in &settled.tally {
        kit.metrics.count(&lane.route, *counted, *n);
    }
    let spool = kit.spool.clone();
    let settings = settings.clone();
    let metrics = kit.metrics.clone();
    let retry_at = now + retry.initial.as_secs() as i64;
    let damaged = answered.damaged;
    tokio::spawn(async move {
        let mut records = settled.records;
        let built = build_notices(&spool, &settings, settled.notices, false).await;
        let mut notices = built.notices;
        for request in built.failed {
            without_notice(&mut records, &request, retry_at);
        }
        let keep = built.kept;
        let mut quarantine = Vec::new();
        for (id, reason) in damaged {
            let (built, d) = damaged_notice(&spool, &settings, id, reason).await;
            // A damaged double bounce nobody can receive is kept in `corrupt/` already.
            notices.extend(built.notices);
            quarantine.push(d);
        }
        let logs: Vec<_> = notices
            .iter()
            .map(|b| (b.about, b.sealed.id(), b.to.clone(), b.kind))
            .collect();
        let outcomes = Outcomes {
            records,
            notices: notices.into_iter().map(|b| b.sealed).collect(),
            damaged: quarantine,
            keep: keep.clone(),
        };
        match spool.record(outcomes).await {
            Ok(()) => {
                for (id, dsn, to, kind) in logs {
                    if kind == NoticeKind::DoubleBounce {
                        metrics.double_bounce();
                        tracing::warn!(id = %id, dsn = %dsn, to = %to, "double bounce: sent to the admin address");
                    } else {
                        tracing::info!(id = %id, dsn = %dsn, to = %to, kind = kind.as_str(), "DSN queued");
                    }
                }
                for id in keep {
                    metrics.double_bounce();
                    tracing::error!(
                        id = %id,
                        "double bounce: the notice failed and nobody can be told; it stays \
                         in the queue for the operator (set `admin` to have it sent)"
                    );
                }
                let _ = reply.send(());
            }
            Err(e) => {
                tracing::error!(error = %e, "recording outcomes failed; the claims are retried")
            }
        }
    });
}

/// A damaged message: every recipient not yet final bounces, and the sender gets a
/// notice without the content when its envelope can be read.
async fn damaged_notice(
    spool: &Spool,
    settings: &Arc<NoticeSettings>,
    id: QueueId,
    reason: String,
) -> (BuiltNotices, Damaged) {
    tracing::error!(id = %id, reason = %reason, "message file damaged: its recipients bounce");
    let positions = spool.pending_positions(id).await.unwrap_or_default();
    let lines = positions
        .iter()
        .map(|p| Line {
            position: *p,
            action: Action::Failed,
            status: "5.3.0".into(),
            remote_mta: None,
            diagnostic: format!("the message file is damaged: {reason}"),
        })
        .collect();
    let request = NoticeRequest {
        id,
        lines,
        records: Vec::new(),
    };
    let built = build_notices(spool, settings, vec![request], true).await;
    let damaged = Damaged {
        id,
        reason,
        positions,
    };
    (built, damaged)
}

/// What building a group's notices came to.
#[derive(Default)]
struct BuiltNotices {
    notices: Vec<Built>,
    /// Requests whose notice could not be written: their records must wait.
    failed: Vec<NoticeRequest>,
    /// Double bounces nobody can receive: kept in the queue.
    kept: Vec<QueueId>,
}

/// Builds notices on a blocking thread.
async fn build_notices(
    spool: &Spool,
    settings: &Arc<NoticeSettings>,
    requests: Vec<NoticeRequest>,
    damaged: bool,
) -> BuiltNotices {
    if requests.is_empty() {
        return BuiltNotices::default();
    }
    let spool = spool.clone();
    let settings = settings.clone();
    let all = requests.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = BuiltNotices::default();
        for request in requests {
            match super::notices::build(&spool, &settings, &request, damaged) {
                Ok(Fate::Built(notice)) => out.notices.push(*notice),
                Ok(Fate::NotWanted) => {}
                Ok(Fate::Kept) => out.kept.push(request.id),
                Err(e) => {
                    tracing::error!(id = %request.id, error = %e, "DSN could not be written");
                    out.failed.push(request);
                }
            }
        }
        out
    })
    .await
    .unwrap_or_else(|_| BuiltNotices {
        failed: all,
        ..BuiltNotices::default()
    })
}
