//! One delivery over an open connection: the claimed recipients' messages are read from
//! the spool a batch at a time (bounded bytes in memory, however many are claimed), sent
//! pipelined, and every recipient gets a classified result. Deliveries are recorded as
//! their replies arrive, while the rest of the batch is still on the wire, so a crash
//! repeats only what was unanswered (the RFC 1047 window). Everything else goes back to
//! the caller, which decides retries, expiry and notices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::client::{Connection, Outgoing};
use super::dsn::{self, Action, Line, Notice};
use super::outcome::{Classified, Outcome, Scope};
use crate::spool::claims::{Claim, Recorded};
use crate::spool::envelope::{read_body, read_stored};
use crate::spool::{Envelope, QueueId, Recipient, Spool, now_unix};

/// Bytes of content read into memory for one pipelined batch.
const MAX_BATCH_BYTES: usize = 10 << 20;

/// What a delivery run did.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Every claim not already recorded as delivered, with its result.
    pub rest: Vec<(Claim, Classified)>,
    /// Recipients delivered (and recorded).
    pub delivered: usize,
    /// Bytes of the messages delivered.
    pub bytes: u64,
    /// The connection can carry nothing more: the results in `rest` with connection
    /// scope say why.
    pub connection_lost: bool,
    /// Success notices for senders who asked (NOTIFY=SUCCESS) when the upstream cannot
    /// carry the request on (no DSN extension): "relayed" (RFC 3461 §6.2.2).
    pub relayed: Vec<Notice>,
}

/// Running totals a delivery updates as it goes, for `flush --wait` and `status`.
#[derive(Debug, Default)]
pub struct Progress {
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Connections delivering now, by name.
    active: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Progress {
    pub fn started(&self, lane: String) {
        self.active.lock().expect("not poisoned").insert(lane);
    }

    pub fn finished(&self, lane: &str) {
        self.active.lock().expect("not poisoned").remove(lane);
    }

    pub fn active(&self) -> Vec<String> {
        self.active
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

struct Loaded {
    envelope: Envelope,
    content: Vec<u8>,
    eight_bit: bool,
    claims: Vec<Claim>,
}

/// Delivers `claims` over `conn`.
pub async fn deliver(
    conn: &mut Connection,
    spool: &Spool,
    claims: Vec<Claim>,
    progress: &Arc<Progress>,
) -> Delivery {
    let mut by_message: BTreeMap<QueueId, Vec<Claim>> = BTreeMap::new();
    for c in claims {
        by_message.entry(c.message_id).or_default().push(c);
    }
    let mut pending: Vec<(QueueId, Vec<Claim>)> = by_message.into_iter().collect();
    pending.reverse(); // popped oldest first
    let mut out = Delivery::default();
    while !pending.is_empty() {
        let (batch, unreadable) = load_batch(spool, &mut pending).await;
        out.rest.extend(unreadable);
        if batch.is_empty() {
            continue;
        }
        send_batch(conn, spool, &batch, progress, &mut out).await;
        if out.connection_lost {
            // Not sent at all: the connection is gone. Not an attempt.
            let failure = out
                .rest
                .iter()
                .rev()
                .find(|(_, c)| c.scope == Scope::Connection)
                .map(|(_, c)| c.clone())
                .expect("a connection-scope result");
            for (_, claims) in pending.drain(..) {
                for claim in claims {
                    let unsent = Classified {
                        outcome: Outcome::Unsent,
                        reason: format!("not sent: {}", failure.reason),
                        ..failure.clone()
                    };
                    out.rest.push((claim, unsent));
                }
            }
        }
    }
    out
}

async fn send_batch(
    conn: &mut Connection,
    spool: &Spool,
    batch: &[Loaded],
    progress: &Arc<Progress>,
    out: &mut Delivery,
) {
    let recipients: Vec<Vec<Recipient>> = batch
        .iter()
        .map(|m| {
            m.claims
                .iter()
                .map(|c| m.envelope.recipients[c.position].clone())
                .collect()
        })
        .collect();
    let outgoing: Vec<Outgoing<'_>> = batch
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
    let host = conn.host.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<Classified>)>();
    let send = async {
        let mut report = move |i: usize, o: &[Classified]| {
            let _ = tx.send((i, o.to_vec()));
        };
        conn.send_batch_each(&outgoing, &mut report).await
    };
    let record_deliveries = async {
        let mut recorded = vec![false; batch.len()];
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
                for (claim, c) in batch[*i].claims.iter().zip(outcomes) {
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
                    progress.messages_sent.fetch_add(1, Ordering::Relaxed);
                    progress
                        .bytes_sent
                        .fetch_add(batch[*i].content.len() as u64, Ordering::Relaxed);
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
    let upstream_has_dsn = conn.capabilities().dsn;
    for ((m, results), already) in batch.iter().zip(outcomes).zip(recorded) {
        if results.iter().any(|c| c.outcome == Outcome::Delivered) {
            out.bytes += m.content.len() as u64;
        }
        let mut relayed = Vec::new();
        for (claim, c) in m.claims.iter().zip(&results) {
            let recipient = &m.envelope.recipients[claim.position];
            if c.outcome == Outcome::Delivered
                && !upstream_has_dsn
                && dsn::wanted(&m.envelope, recipient, Action::Relayed)
            {
                relayed.push(Line {
                    position: claim.position,
                    action: Action::Relayed,
                    status: "2.0.0".into(),
                    remote_mta: Some(host.clone()),
                    diagnostic: c.reason.clone(),
                });
            }
        }
        if !relayed.is_empty() {
            out.relayed.push(Notice {
                envelope: m.envelope.clone(),
                content: m.content.clone(),
                lines: relayed,
            });
        }
        for (claim, c) in m.claims.iter().zip(results) {
            if c.scope == Scope::Connection && c.outcome != Outcome::Delivered {
                out.connection_lost = true;
            }
            if c.outcome == Outcome::Delivered {
                tracing::info!(id = %claim.message_id, to = %claim.address, relay = %host, reply = %c.reason, "delivered");
                out.delivered += 1;
                if already {
                    continue;
                }
            }
            out.rest.push((claim.clone(), c));
        }
    }
}

/// Reads messages from the end of `pending` until the batch holds `MAX_BATCH_BYTES`
/// (at least one message). Claims whose file cannot be read come back separately.
async fn load_batch(
    spool: &Spool,
    pending: &mut Vec<(QueueId, Vec<Claim>)>,
) -> (Vec<Loaded>, Vec<(Claim, Classified)>) {
    let spool = spool.clone();
    let mut taken = std::mem::take(pending);
    let (loaded, unreadable, rest) = tokio::task::spawn_blocking(move || {
        let (mut loaded, mut unreadable) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        while bytes < MAX_BATCH_BYTES {
            let Some((id, claims)) = taken.pop() else {
                break;
            };
            let path = spool.layout().message_path(id);
            let fs = spool.fs().as_ref();
            let read = read_stored(fs, &path)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    let body = read_body(fs, &path, &s).map_err(|e| e.to_string())?;
                    Ok((s, body))
                });
            match read {
                Ok((stored, content)) => {
                    bytes += content.len();
                    loaded.push(Loaded {
                        envelope: stored.envelope,
                        content,
                        eight_bit: stored.trailer.eight_bit,
                        claims,
                    });
                }
                Err(why) => unreadable.extend(claims.into_iter().map(|c| {
                    // The file should be there; recovery will look at it. Not an attempt.
                    let result = Classified {
                        outcome: Outcome::Unsent,
                        scope: Scope::Recipient,
                        reason: format!("reading the spool file: {why}"),
                        status: "4.3.0".into(),
                    };
                    (c, result)
                })),
            }
        }
        (loaded, unreadable, taken)
    })
    .await
    // A panic while reading loses these claims only until their lease runs out.
    .unwrap_or_default();
    *pending = rest;
    (loaded, unreadable)
}
