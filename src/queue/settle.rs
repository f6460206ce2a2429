//! What a delivery result means for its recipient, decided in one place: the retry
//! policy's backoff for destinations that answered, no attempt and no ageing when our
//! link was down (DESIGN §1.4), expiry once the online age passes `retry.expire_after`,
//! a delay notice once it passes `retry.warn_after`, and a failure notice for every
//! bounce, committed *before* the bounce is recorded: a crash can repeat a notice, never
//! lose one. A failure notice that cannot be queued leaves its recipient deferred.

use std::collections::BTreeMap;
use std::time::Duration;

use super::notices;
use super::retry::RetryPolicy;
use crate::delivery::dsn::{Action, Line, Notice};
use crate::delivery::outcome::{Classified, Outcome};
use crate::metrics::Counted;
use crate::spool::claims::{Claim, Recorded};
use crate::spool::envelope::{read_body, read_stored};
use crate::spool::{QueueId, Spool, now_unix};

/// What settling needs to know.
pub struct Policy<'a> {
    pub spool: &'a Spool,
    pub hostname: &'a str,
    pub retry: &'a RetryPolicy,
    /// When mail kept back by our link is tried again at the latest (the gate opening
    /// brings it forward).
    pub link_retry: Duration,
}

/// How many recipients came to each end, for the metrics. Deliveries are not in it:
/// the delivery run counts those as they are answered.
pub type Tally = Vec<(Counted, u64)>;

/// Records every result, with the notices they call for; returns the tally.
pub async fn settle(
    p: &Policy<'_>,
    results: Vec<(Claim, Classified)>,
    host: Option<&str>,
) -> Tally {
    if results.is_empty() {
        return Tally::new();
    }
    let now = now_unix();
    let mut records = Vec::with_capacity(results.len());
    let mut lines: BTreeMap<QueueId, Vec<(usize, Line)>> = BTreeMap::new();
    for (claim, c) in results {
        let id = claim.message_id;
        let index = records.len();
        let mut notice = |action: Action, status: &str, diagnostic: String| {
            lines.entry(id).or_default().push((
                index,
                Line {
                    position: claim.position,
                    action,
                    status: status.to_owned(),
                    remote_mta: host.map(str::to_owned),
                    diagnostic,
                },
            ));
        };
        let rec = match c.outcome {
            Outcome::Delivered => Recorded::Delivered {
                reply: c.reason.clone(),
                host: host.unwrap_or_default().to_owned(),
            },
            Outcome::Bounced => {
                tracing::warn!(id = %id, to = %claim.address, reason = %c.reason, "bounced");
                notice(Action::Failed, &c.status, c.reason.clone());
                Recorded::Bounced {
                    reply: c.reason.clone(),
                    host: host.map(str::to_owned),
                }
            }
            Outcome::Deferred => {
                let age = Duration::from_secs(claim.online_age.max(0) as u64);
                if p.retry.expired(age) {
                    let reply = format!(
                        "expired after {} online: {}",
                        humantime::format_duration(age),
                        c.reason
                    );
                    tracing::warn!(id = %id, to = %claim.address, reason = %reply, "expired");
                    // RFC 3463 4.4.7: delivery time expired.
                    notice(Action::Failed, "4.4.7", reply.clone());
                    Recorded::Expired { reply }
                } else {
                    let warn = !claim.warned && p.retry.warn_due(age);
                    if warn {
                        notice(Action::Delayed, &c.status, c.reason.clone());
                    }
                    let delay = p.retry.next_delay(claim.attempts as u32 + 1, jitter());
                    tracing::info!(id = %id, to = %claim.address, reason = %c.reason, retry_in = ?delay, "deferred");
                    Recorded::Deferred {
                        reply: c.reason.clone(),
                        host: host.map(str::to_owned),
                        next_attempt_at: now + delay.as_secs_f64().ceil() as i64,
                        attempt: true,
                        link_wait: false,
                        warned: warn,
                    }
                }
            }
            Outcome::LinkDown | Outcome::Unsent => {
                let link = c.outcome == Outcome::LinkDown;
                tracing::info!(id = %id, to = %claim.address, reason = %c.reason,
                    "deferred: {} (not an attempt)", if link { "link down" } else { "not sent" });
                Recorded::Deferred {
                    reply: c.reason.clone(),
                    host: None,
                    next_attempt_at: now + p.link_retry.as_secs() as i64,
                    attempt: false,
                    link_wait: link,
                    warned: false,
                }
            }
        };
        records.push((id, claim.position, rec));
    }
    for (id, indexed) in lines {
        let queued = match load(p.spool, id).await {
            Ok(notice) => {
                let notice = Notice {
                    lines: indexed.iter().map(|(_, l)| l.clone()).collect(),
                    ..notice
                };
                notices::send(p.spool, p.hostname, notice).await
            }
            Err(e) => {
                tracing::error!(id = %id, error = %e, "cannot read the message for its DSN");
                false
            }
        };
        if !queued {
            // The bounce waits until its notice can be queued: never one without it.
            // A delay notice is tried again at the next deferral.
            for (index, line) in &indexed {
                if let Recorded::Deferred { warned, .. } = &mut records[*index].2 {
                    *warned = false;
                } else if line.action == Action::Failed {
                    records[*index].2 = Recorded::Deferred {
                        reply: format!(
                            "{}; its failure notice could not be queued yet",
                            line.diagnostic
                        ),
                        host: None,
                        next_attempt_at: now + p.retry.initial.as_secs() as i64,
                        attempt: false,
                        link_wait: false,
                        warned: false,
                    };
                }
            }
        }
    }
    let mut tally = Tally::new();
    for (_, _, rec) in &records {
        let counted = match rec {
            Recorded::Delivered { .. } => continue,
            Recorded::Deferred { attempt: true, .. } => Counted::Deferred,
            Recorded::Deferred { .. } => Counted::NotAttempted,
            Recorded::Bounced { .. } => Counted::Bounced,
            Recorded::Expired { .. } => Counted::Expired,
        };
        match tally.iter_mut().find(|(c, _)| *c == counted) {
            Some((_, n)) => *n += 1,
            None => tally.push((counted, 1)),
        }
    }
    if let Err(e) = p.spool.record(records, now_unix()).await {
        tracing::error!(error = %e, "recording outcomes failed; the claims will expire and be retried");
    }
    tally
}

/// The message as stored, for its notice.
async fn load(spool: &Spool, id: QueueId) -> Result<Notice, String> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || {
        let path = spool.layout().message_path(id);
        let fs = spool.fs().as_ref();
        let stored = read_stored(fs, &path).map_err(|e| e.to_string())?;
        let content = read_body(fs, &path, &stored).map_err(|e| e.to_string())?;
        Ok(Notice {
            envelope: stored.envelope,
            content,
            lines: Vec::new(),
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A number in [0, 1) for retry jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
