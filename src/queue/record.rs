//! Recording what a delivery answered, off the owner's loop: what each result means
//! (`settle`), the notices it calls for, written from the spool files on a blocking
//! thread (`notices`), damaged files' notices and quarantine, then one spool record that
//! commits the outcomes with their notices. The runner that answered is told once they
//! are durable, which moves its pipelining window.

use std::collections::HashSet;

use tokio::sync::oneshot;

use super::lane::{Kit, Lane};
use super::notices::Built;
use super::retry::RetryPolicy;
use super::settle::{self, NoticeRequest, Policy, without_notice};
use crate::delivery::dsn::{Action, Line};
use crate::delivery::runner::Answered;
use crate::spool::{Damaged, Outcomes, QueueId, Spool, now_unix};

/// Decides what `answered` means and records it, with its notices; `reply` once it is
/// durable.
pub fn record(
    kit: &Kit,
    retry: &RetryPolicy,
    hostname: &str,
    lane: &Lane,
    answered: Answered,
    reply: oneshot::Sender<()>,
) {
    let policy = Policy {
        retry,
        soon: kit.link.probe_interval,
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
    let hostname = hostname.to_owned();
    let retry_at = now + retry.initial.as_secs() as i64;
    let damaged = answered.damaged;
    tokio::spawn(async move {
        let mut records = settled.records;
        let (mut notices, failed) = build_notices(&spool, &hostname, settled.notices, false).await;
        for request in failed {
            without_notice(&mut records, &request, retry_at);
        }
        let mut quarantine = Vec::new();
        for (id, reason) in damaged {
            let (notice, d) = damaged_notice(&spool, &hostname, id, reason).await;
            notices.extend(notice);
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
        };
        match spool.record(outcomes).await {
            Ok(()) => {
                for (id, dsn, to, kind) in logs {
                    tracing::info!(id = %id, dsn = %dsn, to = %to, kind, "DSN queued");
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
    hostname: &str,
    id: QueueId,
    reason: String,
) -> (Option<Built>, Damaged) {
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
    let (mut built, _) = build_notices(spool, hostname, vec![request], true).await;
    let damaged = Damaged {
        id,
        reason,
        positions,
    };
    (built.pop(), damaged)
}

/// Builds notices on a blocking thread; returns those built and the requests that could
/// not be (their records must wait).
async fn build_notices(
    spool: &Spool,
    hostname: &str,
    requests: Vec<NoticeRequest>,
    damaged: bool,
) -> (Vec<Built>, Vec<NoticeRequest>) {
    if requests.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let spool = spool.clone();
    let hostname = hostname.to_owned();
    let kept = requests.clone();
    tokio::task::spawn_blocking(move || {
        let (mut built, mut failed) = (Vec::new(), Vec::new());
        for request in requests {
            match super::notices::build(&spool, &hostname, &request, damaged) {
                Ok(Some(notice)) => built.push(notice),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(id = %request.id, error = %e, "DSN could not be written");
                    failed.push(request);
                }
            }
        }
        (built, failed)
    })
    .await
    .unwrap_or((Vec::new(), kept))
}
