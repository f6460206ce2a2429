//! One delivery over an open connection: the claimed recipients' messages are read from
//! the spool a batch at a time (small ones into memory, large ones streamed from their
//! files, so memory stays bounded however much is claimed), sent pipelined, and every
//! answer goes to the caller's recorder as it arrives, while the rest of the batch is
//! still on the wire. The sender's window counts from what the recorder has made
//! durable, so a crash repeats at most the window (the RFC 1047 duplicates), whatever
//! the disk's latency. A message whose file fails its checks is reported as damaged and
//! never sent. What the connection could not carry comes back to the caller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{oneshot, watch};

use super::batch::Tracker;
use super::client::{Connection, Outgoing};
use super::content::{Content, INLINE_MAX, StoredFile};
use super::dsn::{self, Action};
use super::outcome::{Classified, Event, Outcome, Phase, Scope, classify};
use crate::spool::claims::Claim;
use crate::spool::envelope::{FormatError, read_body, read_stored, verify_body};
use crate::spool::{Envelope, QueueId, Recipient, Spool};

/// Bytes of content one batch takes (at least one message, however large).
const MAX_BATCH_BYTES: u64 = 10 << 20;

/// Answers as they come, for the queue owner to record.
#[derive(Debug, Default)]
pub struct Answered {
    pub results: Vec<(Claim, Classified)>,
    /// The upstream, for `last_host` and notices.
    pub host: Option<String>,
    /// Delivered recipients whose sender asked to hear of success, where the upstream
    /// cannot carry the request on: they get a "relayed" notice (RFC 3461 §6.2.2).
    pub relayed: Vec<(QueueId, usize)>,
    /// Messages whose spool file failed its checks, with why: they leave the queue.
    pub damaged: Vec<(QueueId, String)>,
}

/// Takes answers to record; the receiver is answered once they are durable (or could
/// not be made so: the claims then stay unrecorded and are retried).
pub type Recorder<'a> = dyn Fn(Answered) -> oneshot::Receiver<()> + Send + Sync + 'a;

/// What a delivery run did.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Results not yet given to the recorder (never sent, or cut off with the
    /// connection): the caller decides what they mean, then records them.
    pub rest: Vec<(Claim, Classified)>,
    /// Recipients delivered (and recorded).
    pub delivered: usize,
    /// Bytes of the messages delivered.
    pub bytes: u64,
    /// The connection can carry nothing more: the results in `rest` with connection
    /// scope say why.
    pub connection_lost: bool,
}

/// Running totals a delivery updates as it goes, for `flush --wait` and `status`.
#[derive(Debug, Default)]
pub struct DeliveryTotals {
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Connections delivering now, by name.
    active: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Changes the queue owner has yet to finish (releases, flushes): more mail may
    /// become due.
    changes_pending: std::sync::atomic::AtomicUsize,
}

impl DeliveryTotals {
    pub(crate) fn set_changes_pending(&self, n: usize) {
        self.changes_pending.store(n, Ordering::Relaxed);
    }

    pub fn changes_pending(&self) -> usize {
        self.changes_pending.load(Ordering::Relaxed)
    }

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

enum Body {
    Inline(Vec<u8>),
    File(StoredFile),
}

struct Loaded {
    envelope: Envelope,
    body: Body,
    eight_bit: bool,
    claims: Vec<Claim>,
}

impl Loaded {
    fn content(&self) -> Content<'_> {
        match &self.body {
            Body::Inline(b) => Content::Bytes(b),
            Body::File(f) => Content::File(f),
        }
    }

    /// The message as the client sends it, to `recipients` (its claimed ones).
    fn outgoing<'a>(&'a self, recipients: &'a [Recipient]) -> Outgoing<'a> {
        Outgoing {
            id: self.envelope.id.as_str(),
            sender: &self.envelope.sender,
            recipients,
            content: self.content(),
            body: self.envelope.body,
            eight_bit: self.eight_bit,
            smtputf8: self.envelope.smtputf8,
            envid: self.envelope.envid.as_deref(),
            ret: self.envelope.ret,
        }
    }

    /// Adds each claimed recipient's outcome to `answers`, noting a delivered one whose
    /// sender asked to hear of success where the upstream (`host`, without DSN support
    /// unless `upstream_dsn`) cannot carry the request on. Returns the recipients
    /// delivered.
    fn answer(
        &self,
        outcomes: &[Classified],
        host: &str,
        upstream_dsn: bool,
        answers: &mut Answered,
    ) -> usize {
        let mut delivered = 0;
        for (claim, c) in self.claims.iter().zip(outcomes) {
            if c.outcome == Outcome::Delivered {
                tracing::info!(id = %claim.message_id, to = %claim.address, relay = %host, reply = %c.reason, "delivered");
                delivered += 1;
                let recipient = &self.envelope.recipients[claim.position];
                if !upstream_dsn && dsn::wanted(&self.envelope, recipient, Action::Relayed) {
                    answers.relayed.push((claim.message_id, claim.position));
                }
            }
            answers.results.push((claim.clone(), c.clone()));
        }
        delivered
    }
}

/// Delivers `claims` over `conn`, giving answers to `record` as they come.
pub async fn deliver(
    conn: &mut Connection,
    spool: &Spool,
    claims: Vec<Claim>,
    progress: &Arc<DeliveryTotals>,
    record: &Recorder<'_>,
) -> Delivery {
    let mut by_message: BTreeMap<QueueId, Vec<Claim>> = BTreeMap::new();
    for c in claims {
        by_message.entry(c.message_id).or_default().push(c);
    }
    let mut pending: Vec<(QueueId, Vec<Claim>)> = by_message.into_iter().collect();
    pending.reverse(); // popped oldest first
    let mut out = Delivery::default();
    while !pending.is_empty() {
        let loaded = load_batch(spool, &mut pending).await;
        out.rest.extend(loaded.unreadable);
        if !loaded.damaged.is_empty() {
            let durable = record(Answered {
                damaged: loaded.damaged,
                ..Answered::default()
            });
            let _ = durable.await;
        }
        if loaded.batch.is_empty() {
            continue;
        }
        send_batch(conn, &loaded.batch, progress, record, &mut out).await;
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
                    out.rest.push((claim, Classified::not_sent(&failure)));
                }
            }
        }
    }
    out
}

async fn send_batch(
    conn: &mut Connection,
    batch: &[Loaded],
    progress: &Arc<DeliveryTotals>,
    record: &Recorder<'_>,
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
        .map(|(m, rcpts)| m.outgoing(rcpts))
        .collect();
    let host = conn.host.clone();
    let upstream_dsn = conn.capabilities().dsn;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<Classified>)>();
    let (durable_tx, durable_rx) = watch::channel(0usize);
    let send = async {
        let mut answered = move |i: usize, o: &[Classified]| {
            let _ = tx.send((i, o.to_vec()));
        };
        let track = Tracker {
            answered: &mut answered,
            durable: durable_rx,
        };
        conn.send_batch(&outgoing, track).await
    };
    let record_answers = async {
        let mut reported = vec![false; batch.len()];
        let (mut durable, mut delivered, mut bytes) = (0, 0, 0);
        while let Some(first) = rx.recv().await {
            // Everything answered meanwhile goes into the same record: recording must
            // keep up with replies, or the window stalls.
            let mut answered = vec![first];
            while let Ok(more) = rx.try_recv() {
                answered.push(more);
            }
            let mut answers = Answered {
                host: Some(host.clone()),
                ..Answered::default()
            };
            for (i, outcomes) in &answered {
                reported[*i] = true;
                let m = &batch[*i];
                if outcomes.iter().any(|c| c.outcome == Outcome::Delivered) {
                    progress.messages_sent.fetch_add(1, Ordering::Relaxed);
                    progress
                        .bytes_sent
                        .fetch_add(m.content().len(), Ordering::Relaxed);
                    bytes += m.content().len();
                }
                delivered += m.answer(outcomes, &host, upstream_dsn, &mut answers);
            }
            let recorded = record(answers);
            let _ = recorded.await;
            durable += answered.len();
            let _ = durable_tx.send(durable);
        }
        (reported, delivered, bytes)
    };
    let (outcomes, (reported, delivered, bytes)) = tokio::join!(send, record_answers);
    out.delivered += delivered;
    out.bytes += bytes;
    for ((m, results), already) in batch.iter().zip(outcomes).zip(reported) {
        for (claim, c) in m.claims.iter().zip(results) {
            if c.scope == Scope::Connection && c.outcome != Outcome::Delivered {
                out.connection_lost = true;
            }
            if !already {
                out.rest.push((claim.clone(), c));
            }
        }
    }
}

/// A batch read from the spool, and what could not be read.
#[derive(Default)]
struct LoadedBatch {
    batch: Vec<Loaded>,
    /// Claims whose file could not be read now (not its fault): not an attempt.
    unreadable: Vec<(Claim, Classified)>,
    /// Messages whose file is damaged.
    damaged: Vec<(QueueId, String)>,
}

/// Reads messages from the end of `pending` until the batch holds `MAX_BATCH_BYTES` of
/// content (at least one message). Small bodies are read whole, checksum checked; a
/// large one's checksum is checked by reading it once, and it is sent from its file.
async fn load_batch(spool: &Spool, pending: &mut Vec<(QueueId, Vec<Claim>)>) -> LoadedBatch {
    let spool = spool.clone();
    let mut taken = std::mem::take(pending);
    let (loaded, rest) = tokio::task::spawn_blocking(move || {
        let mut out = LoadedBatch::default();
        let mut bytes = 0;
        while bytes < MAX_BATCH_BYTES {
            let Some((id, claims)) = taken.pop() else {
                break;
            };
            let path = spool.layout().message_path(id);
            let fs = spool.fs().as_ref();
            let read = read_stored(fs, &path).and_then(|stored| {
                let body = if stored.content_size() <= INLINE_MAX {
                    Body::Inline(read_body(fs, &path, &stored)?)
                } else {
                    verify_body(fs, &path, &stored)?;
                    Body::File(StoredFile {
                        path: path.clone(),
                        offset: stored.body_offset,
                        len: stored.trailer.size,
                        prepend: stored.prepend.clone(),
                    })
                };
                Ok((stored, body))
            });
            match read {
                Ok((stored, body)) => {
                    bytes += stored.content_size();
                    out.batch.push(Loaded {
                        envelope: stored.envelope,
                        body,
                        eight_bit: stored.trailer.eight_bit,
                        claims,
                    });
                }
                Err(e) if e.is_damage() => out.damaged.push((id, e.to_string())),
                // Indexed but gone: removed behind our back. Its recipients cannot be
                // delivered; they leave the queue like a damaged file's.
                Err(FormatError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    out.damaged.push((id, "the message file is missing".into()));
                }
                Err(e) => out
                    .unreadable
                    .extend(claims.into_iter().map(|c| (c, not_read(&e)))),
            }
        }
        (out, taken)
    })
    .await
    // A panic while reading leaves these claims to be released when the lane ends.
    .unwrap_or_default();
    *pending = rest;
    loaded
}

fn not_read(e: &FormatError) -> Classified {
    let detail = e.to_string();
    classify(
        Phase::Mail,
        &Event::SpoolUnreadable {
            detail,
            mid_transaction: false,
        },
    )
}
