//! One delivery run for a relaying route: the claimed recipients' messages are read from
//! the spool, sent over one connection in pipelined batches, and every recipient gets an
//! outcome to record. Deferrals that reached the destination back off by the retry
//! policy; our link being down does not count and is retried at the probe interval.
//! Bounces come back with what their DSN needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::client::{ClientSettings, Connection, Outgoing};
use super::outcome::{Classified, Outcome};
use crate::queue::retry::RetryPolicy;
use crate::spool::claims::{Claim, Recorded};
use crate::spool::envelope::{read_body, read_stored};
use crate::spool::{Envelope, QueueId, Recipient, Spool, now_unix};

/// Bytes of content in one pipelined batch.
const MAX_BATCH_BYTES: usize = 10 << 20;

/// A bounced recipient, for its message's DSN.
#[derive(Clone, Debug)]
pub struct Bounce {
    pub position: usize,
    pub classified: Classified,
    pub host: Option<String>,
}

/// A message with bounced recipients.
#[derive(Clone, Debug)]
pub struct Bounced {
    pub envelope: Envelope,
    pub content: Vec<u8>,
    pub bounces: Vec<Bounce>,
}

pub struct RunResult {
    pub records: Vec<(QueueId, usize, Recorded)>,
    pub bounced: Vec<Bounced>,
}

struct Loaded {
    envelope: Envelope,
    content: Vec<u8>,
    eight_bit: bool,
    claims: Vec<Claim>,
}

/// Delivers `claims` to `host_port` under `settings`.
pub async fn run_relay(
    spool: &Spool,
    host_port: &str,
    settings: &ClientSettings,
    retry: &RetryPolicy,
    link_retry: Duration,
    claims: Vec<Claim>,
) -> RunResult {
    let now = now_unix();
    let mut result = RunResult {
        records: Vec::new(),
        bounced: Vec::new(),
    };
    let (messages, unreadable) = load(spool, claims).await;
    for (claim, why) in unreadable {
        // The file should be there; recovery will look at it. Not an attempt.
        let rec = Recorded::Deferred {
            reply: why,
            host: None,
            next_attempt_at: now + link_retry.as_secs() as i64,
            attempt: false,
        };
        result.records.push((claim.message_id, claim.position, rec));
    }
    let apply_all =
        |messages: &[Loaded], c: &Classified, host: Option<&str>, result: &mut RunResult| {
            for m in messages {
                let outcomes = vec![c.clone(); m.claims.len()];
                record_message(m, &outcomes, host, retry, link_retry, false, result);
            }
        };
    let (addr, server_name) = match resolve(host_port).await {
        Ok(found) => found,
        Err(c) => {
            apply_all(&messages, &c, None, &mut result);
            return result;
        }
    };
    let mut conn = match Connection::open(addr, &server_name, settings).await {
        Ok(conn) => conn,
        Err(c) => {
            apply_all(&messages, &c, None, &mut result);
            return result;
        }
    };
    let host = conn.host.clone();
    let mut start = 0;
    while start < messages.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < messages.len()
            && (end == start || bytes + messages[end].content.len() <= MAX_BATCH_BYTES)
        {
            bytes += messages[end].content.len();
            end += 1;
        }
        let recipients: Vec<Vec<Recipient>> = messages[start..end]
            .iter()
            .map(|m| {
                m.claims
                    .iter()
                    .map(|c| m.envelope.recipients[c.position].clone())
                    .collect()
            })
            .collect();
        let batch: Vec<Outgoing<'_>> = messages[start..end]
            .iter()
            .zip(&recipients)
            .map(|(m, rcpts)| Outgoing {
                sender: &m.envelope.sender,
                recipients: rcpts,
                content: &m.content,
                body: m.envelope.body,
                eight_bit: m.eight_bit,
                smtputf8: m.envelope.smtputf8,
                envid: m.envelope.envid.as_deref(),
                ret: m.envelope.ret,
            })
            .collect();
        // Deliveries are recorded as each message is answered, while the rest of the
        // batch is still on the wire: over a slow link a crash then repeats only what was
        // still unanswered, not the whole batch. (What the upstream has already read from
        // its socket it may still commit after we die: the RFC 1047 window of any
        // pipelined sender.) Everything else is recorded after the batch, as before.
        let window = &messages[start..end];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<Classified>)>();
        let send = async {
            let mut report = move |i: usize, o: &[Classified]| {
                let _ = tx.send((i, o.to_vec()));
            };
            conn.send_batch_each(&batch, &mut report).await
        };
        let record_deliveries = async {
            let mut recorded = vec![false; window.len()];
            while let Some(first) = rx.recv().await {
                // Everything answered meanwhile goes into the same transaction: recording
                // must keep up with replies, or the crash window grows instead of shrinking.
                let mut answered = vec![first];
                while let Ok(more) = rx.try_recv() {
                    answered.push(more);
                }
                let mut delivered = Vec::new();
                let mut messages = Vec::new();
                for (i, outcomes) in &answered {
                    let before = delivered.len();
                    for (claim, c) in window[*i].claims.iter().zip(outcomes) {
                        if c.outcome == Outcome::Delivered {
                            let rec = Recorded::Delivered {
                                reply: c.reason.clone(),
                                host: host.clone(),
                            };
                            delivered.push((claim.message_id, claim.position, rec));
                        }
                    }
                    if delivered.len() > before {
                        messages.push(*i);
                    }
                }
                if delivered.is_empty() {
                    continue;
                }
                match spool.record(delivered, now_unix()).await {
                    Ok(_) => messages.iter().for_each(|i| recorded[*i] = true),
                    Err(e) => {
                        tracing::error!(error = %e, "recording deliveries failed; they will be recorded after the batch")
                    }
                }
            }
            recorded
        };
        let (outcomes, recorded) = tokio::join!(send, record_deliveries);
        for ((m, o), already) in window.iter().zip(&outcomes).zip(recorded) {
            record_message(m, o, Some(&host), retry, link_retry, already, &mut result);
        }
        start = end;
    }
    conn.quit().await;
    result
}

/// Turns a message's outcomes into records; deliveries already recorded as the replies
/// came in (`deliveries_recorded`) are only logged.
fn record_message(
    m: &Loaded,
    outcomes: &[Classified],
    host: Option<&str>,
    retry: &RetryPolicy,
    link_retry: Duration,
    deliveries_recorded: bool,
    result: &mut RunResult,
) {
    let now = now_unix();
    let mut bounces = Vec::new();
    for (claim, c) in m.claims.iter().zip(outcomes) {
        let address = &claim.address;
        let rec = match c.outcome {
            Outcome::Delivered => {
                tracing::info!(id = %claim.message_id, to = %address, relay = host.unwrap_or("?"), reply = %c.reason, "delivered");
                if deliveries_recorded {
                    continue;
                }
                Recorded::Delivered {
                    reply: c.reason.clone(),
                    host: host.unwrap_or_default().to_owned(),
                }
            }
            Outcome::Deferred => {
                let delay = retry.next_delay(claim.attempts as u32 + 1, jitter());
                tracing::info!(id = %claim.message_id, to = %address, reason = %c.reason, retry_in = ?delay, "deferred");
                Recorded::Deferred {
                    reply: c.reason.clone(),
                    host: host.map(str::to_owned),
                    next_attempt_at: now + delay.as_secs() as i64,
                    attempt: true,
                }
            }
            Outcome::LinkDown => {
                tracing::info!(id = %claim.message_id, to = %address, reason = %c.reason, "deferred: link down (not an attempt)");
                Recorded::Deferred {
                    reply: c.reason.clone(),
                    host: None,
                    next_attempt_at: now + link_retry.as_secs() as i64,
                    attempt: false,
                }
            }
            Outcome::Bounced => {
                tracing::warn!(id = %claim.message_id, to = %address, reason = %c.reason, "bounced");
                bounces.push(Bounce {
                    position: claim.position,
                    classified: c.clone(),
                    host: host.map(str::to_owned),
                });
                Recorded::Bounced {
                    reply: c.reason.clone(),
                    host: host.map(str::to_owned),
                }
            }
        };
        result.records.push((claim.message_id, claim.position, rec));
    }
    if !bounces.is_empty() {
        result.bounced.push(Bounced {
            envelope: m.envelope.clone(),
            content: m.content.clone(),
            bounces,
        });
    }
}

/// Reads each claimed message once (blocking I/O off the runtime).
async fn load(spool: &Spool, claims: Vec<Claim>) -> (Vec<Loaded>, Vec<(Claim, String)>) {
    let mut by_message: BTreeMap<QueueId, Vec<Claim>> = BTreeMap::new();
    for c in claims {
        by_message.entry(c.message_id).or_default().push(c);
    }
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || {
        let (mut loaded, mut unreadable) = (Vec::new(), Vec::new());
        for (id, claims) in by_message {
            let path = spool.layout().message_path(id);
            let fs = spool.fs().as_ref();
            match read_stored(fs, &path)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    let body = read_body(fs, &path, &s).map_err(|e| e.to_string())?;
                    Ok((s, body))
                }) {
                Ok((stored, content)) => loaded.push(Loaded {
                    envelope: stored.envelope,
                    content,
                    eight_bit: stored.trailer.eight_bit,
                    claims,
                }),
                Err(why) => unreadable.extend(
                    claims
                        .into_iter()
                        .map(|c| (c, format!("reading the spool file: {why}"))),
                ),
            }
        }
        (loaded, unreadable)
    })
    .await
    .unwrap_or_default()
}

/// `host:port` to an address and the name to verify its certificate against.
async fn resolve(host_port: &str) -> Result<(SocketAddr, String), Classified> {
    use super::outcome::{Event, Phase, classify};
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_owned();
    match tokio::net::lookup_host(host_port).await {
        Ok(mut addrs) => match addrs.next() {
            Some(addr) => Ok((addr, host)),
            None => Err(classify(
                Phase::Resolve,
                &Event::DnsFailure(format!("{host}: no address")),
            )),
        },
        Err(_) => Err(classify(Phase::Resolve, &Event::DnsUnreachable)),
    }
}

/// A number in [0, 1) for retry jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
