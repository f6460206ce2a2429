//! What a delivery result means for its recipient, decided in one place and without I/O:
//! the retry policy's backoff for destinations that answered, no attempt and no ageing
//! when our link was down (README, "Intermittent links"), expiry once the online age passes
//! `retry.expire_after`, a delay notice once it passes `retry.warn_after`, a failure
//! notice for every bounce, and a "relayed" notice where the sender asked for success
//! and the upstream cannot carry the request on. The notices are built and committed
//! with the records that report them (`notices`, `owner`): a bounce whose notice cannot
//! be queued stays deferred, never recorded without it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::retry::RetryPolicy;
use crate::delivery::dsn::{Action, Line};
use crate::delivery::outcome::{Classified, Outcome};
use crate::metrics::Counted;
use crate::spool::QueueId;
use crate::spool::claims::{Claim, Verdict};

/// What settling needs to know.
pub struct SettleRules<'a> {
    pub retry: &'a RetryPolicy,
    /// When mail kept back by a failure of ours is tried again at the latest.
    pub soon: Duration,
}

/// A notice to build about one message: its lines, and the records (by index) that
/// must not be written without it.
#[derive(Clone, Debug)]
pub struct NoticeRequest {
    pub id: QueueId,
    pub lines: Vec<Line>,
    pub records: Vec<usize>,
}

/// How many recipients came to each end, for the metrics.
pub type Tally = Vec<(Counted, u64)>;

#[derive(Debug, Default)]
pub struct Settled {
    pub records: Vec<(QueueId, usize, Verdict)>,
    pub notices: Vec<NoticeRequest>,
    pub tally: Tally,
}

/// Decides every result. `host` is the upstream that answered; `relayed` says which
/// delivered recipients get a "relayed" notice (their sender asked for success, and the
/// upstream cannot carry the request on).
pub(crate) fn settle(
    p: &SettleRules<'_>,
    results: Vec<(Claim, Classified)>,
    host: Option<&str>,
    relayed: &dyn Fn(&Claim) -> bool,
    now: i64,
    jitter: f64,
) -> Settled {
    let mut out = Settled::default();
    let mut lines: BTreeMap<QueueId, NoticeRequest> = BTreeMap::new();
    for (claim, c) in results {
        let id = claim.message_id;
        let index = out.records.len();
        let mut notice = |action: Action, status: &str, diagnostic: String| {
            let request = lines.entry(id).or_insert_with(|| NoticeRequest {
                id,
                lines: Vec::new(),
                records: Vec::new(),
            });
            request.lines.push(Line {
                position: claim.position,
                action,
                status: status.to_owned(),
                remote_mta: host.map(str::to_owned),
                diagnostic,
            });
            request.records.push(index);
        };
        let rec = match c.outcome {
            Outcome::Delivered => {
                if relayed(&claim) {
                    notice(Action::Relayed, "2.0.0", c.reason.clone());
                }
                Verdict::Delivered {
                    reply: c.reason.clone(),
                    host: host.unwrap_or_default().to_owned(),
                }
            }
            Outcome::Bounced => {
                tracing::warn!(id = %id, to = %claim.address, reason = %c.reason, "bounced");
                notice(Action::Failed, &c.status, c.reason.clone());
                Verdict::Bounced {
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
                    Verdict::Expired { reply }
                } else {
                    let warn = !claim.warned && p.retry.warn_due(age);
                    if warn {
                        notice(Action::Delayed, &c.status, c.reason.clone());
                    }
                    let delay = p.retry.next_delay(claim.attempts as u32 + 1, jitter);
                    let retry_in = Duration::from_secs(delay.as_secs_f64().ceil() as u64);
                    tracing::info!(id = %id, to = %claim.address, reason = %c.reason,
                        retry_in = %humantime::format_duration(retry_in), "deferred");
                    Verdict::Deferred {
                        reply: c.reason.clone(),
                        host: host.map(str::to_owned),
                        next_attempt_at: Some(now + retry_in.as_secs() as i64),
                        attempt: true,
                        warned: warn,
                    }
                }
            }
            Outcome::LinkDown | Outcome::Unsent => {
                let link = c.outcome == Outcome::LinkDown;
                tracing::info!(id = %id, to = %claim.address, reason = %c.reason,
                    "deferred: {} (not an attempt)", if link { "link down" } else { "not sent" });
                Verdict::Deferred {
                    reply: c.reason.clone(),
                    host: None,
                    // The gate, closed by what the delivery saw, releases it when it opens.
                    next_attempt_at: (!link).then(|| now + p.soon.as_secs() as i64),
                    attempt: false,
                    warned: false,
                }
            }
        };
        out.records.push((id, claim.position, rec));
    }
    out.notices = lines.into_values().collect();
    out.tally = tally(&out.records);
    out
}

/// A notice could not be queued: the records that needed it wait instead (a bounce is
/// tried again later, a delay notice at the next deferral).
pub(crate) fn without_notice(
    records: &mut [(QueueId, usize, Verdict)],
    request: &NoticeRequest,
    retry_at: i64,
) {
    for (index, line) in request.records.iter().zip(&request.lines) {
        let rec = &mut records[*index].2;
        match (rec, line.action) {
            (Verdict::Deferred { warned, .. }, _) => *warned = false,
            (rec @ (Verdict::Bounced { .. } | Verdict::Expired { .. }), Action::Failed) => {
                *rec = Verdict::Deferred {
                    reply: format!(
                        "{}; its failure notice could not be queued yet",
                        line.diagnostic
                    ),
                    host: None,
                    next_attempt_at: Some(retry_at),
                    attempt: false,
                    warned: false,
                };
            }
            _ => {}
        }
    }
}

/// Counts each end, deliveries aside (the delivery counts those as they are answered).
pub(crate) fn tally(records: &[(QueueId, usize, Verdict)]) -> Tally {
    let mut tally = Tally::new();
    for (_, _, rec) in records {
        let counted = match rec {
            Verdict::Delivered { .. } => continue,
            Verdict::Deferred { attempt: true, .. } => Counted::Deferred,
            Verdict::Deferred { .. } => Counted::NotAttempted,
            Verdict::Bounced { .. } => Counted::Bounced,
            Verdict::Expired { .. } => Counted::Expired,
        };
        match tally.iter_mut().find(|(c, _)| *c == counted) {
            Some((_, n)) => *n += 1,
            None => tally.push((counted, 1)),
        }
    }
    tally
}

/// A number in [0, 1) for retry jitter.
pub(crate) fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::outcome::Scope;

    fn claim(position: usize, attempts: i64, age: i64) -> Claim {
        Claim {
            message_id: QueueId::parse("0000000000000001").unwrap(),
            position,
            address: format!("r{position}@x.example"),
            domain: "x.example".into(),
            route: "upstream".into(),
            lane: "upstream".into(),
            attempts,
            online_age: age,
            warned: false,
        }
    }

    fn result(outcome: Outcome) -> Classified {
        Classified {
            outcome,
            scope: Scope::Recipient,
            reason: "450 later".into(),
            status: "4.0.0".into(),
        }
    }

    #[test]
    fn each_result_comes_to_its_end_with_the_notices_it_needs() {
        let retry = RetryPolicy {
            initial: Duration::from_secs(300),
            max: Duration::from_secs(3600),
            expire_after: Duration::from_secs(86400),
            warn_after: Duration::from_secs(3600),
        };
        let p = SettleRules {
            retry: &retry,
            soon: Duration::from_secs(30),
        };
        let results = vec![
            (claim(0, 0, 0), result(Outcome::Delivered)),
            (claim(1, 2, 0), result(Outcome::Deferred)),
            (claim(2, 0, 7200), result(Outcome::Deferred)),
            (claim(3, 9, 90000), result(Outcome::Deferred)),
            (claim(4, 0, 0), result(Outcome::Bounced)),
            (claim(5, 0, 0), result(Outcome::LinkDown)),
            (claim(6, 0, 0), result(Outcome::Unsent)),
        ];
        let s = settle(&p, results, Some("hub"), &|c| c.position == 0, 1000, 0.5);
        let states: Vec<_> = s
            .records
            .iter()
            .map(|(_, _, r)| r.state().as_str())
            .collect();
        assert_eq!(
            states,
            [
                "delivered",
                "deferred",
                "deferred",
                "expired",
                "bounced",
                "deferred",
                "deferred"
            ]
        );
        let Verdict::Deferred {
            next_attempt_at,
            attempt,
            ..
        } = &s.records[1].2
        else {
            panic!()
        };
        assert_eq!(
            (*next_attempt_at, *attempt),
            (Some(1000 + 1200), true),
            "third attempt: 4 × initial"
        );
        let Verdict::Deferred {
            next_attempt_at,
            attempt,
            ..
        } = &s.records[5].2
        else {
            panic!()
        };
        assert_eq!(
            (*next_attempt_at, *attempt),
            (None, false),
            "link down waits for the gate"
        );
        let Verdict::Deferred {
            next_attempt_at, ..
        } = &s.records[6].2
        else {
            panic!()
        };
        assert_eq!(*next_attempt_at, Some(1030));
        // One notice for the message: relayed, delayed, expired and bounced lines.
        assert_eq!(s.notices.len(), 1);
        let actions: Vec<Action> = s.notices[0].lines.iter().map(|l| l.action).collect();
        assert_eq!(
            actions,
            [
                Action::Relayed,
                Action::Delayed,
                Action::Failed,
                Action::Failed
            ]
        );
        assert_eq!(s.notices[0].records, [0, 2, 3, 4]);
        // Without its notice, a bounce waits; a delay is not marked warned.
        let mut records = s.records.clone();
        without_notice(&mut records, &s.notices[0], 2000);
        let states: Vec<_> = records.iter().map(|(_, _, r)| r.state().as_str()).collect();
        assert_eq!(
            states,
            [
                "delivered",
                "deferred",
                "deferred",
                "deferred",
                "deferred",
                "deferred",
                "deferred"
            ]
        );
        assert!(matches!(
            records[2].2,
            Verdict::Deferred { warned: false, .. }
        ));
    }
}
