//! Export: the waiting mail of one route, written into a bundle for the peer that takes
//! the route (or into a BSMTP batch). Mail is claimed from the queue owner a batch at a
//! time, read from its spool file (checksum checked), and written; once the output is
//! durable, what it carries is `bundled` (a BSMTP batch has no receipt: its recipients
//! are delivered, and a sender who asked for success hears "relayed", RFC 3461 §6.2.2).
//! What `--max-bytes` left out, and everything when writing fails, goes back to the
//! queue unchanged but for a reason. Nothing is marked before the output is on disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::format::{self, Header, Kind};
use super::peers::Peers;
use super::record::{self, BundledRecipient, MessageRecord};
use crate::delivery::outcome::{Classified, Outcome};
use crate::delivery::runner::Answered;
use crate::queue::handle::QueueHandle;
use crate::smtp::{Mailbox, NotifyOn};
use crate::spool::claims::Claim;
use crate::spool::envelope::{read_body, read_stored};
use crate::spool::{QueueId, Spool, now_unix};

/// Messages claimed at a time.
const BATCH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A ferrymail bundle for the route's peer.
    Bundle,
    /// Batched SMTP, as Exim reads with `-bS`.
    Bsmtp,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// The bundle's id (none for BSMTP, or when nothing waited).
    pub bundle: Option<String>,
    /// The node it is for.
    pub peer: Option<String>,
    pub messages: u64,
    pub recipients: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes of the messages in it, uncompressed.
    pub raw_bytes: u64,
    /// Messages left for a later export (`--max-bytes`).
    pub left: u64,
    /// Messages whose spool file was damaged: they bounce.
    pub damaged: u64,
}

/// An export's request.
pub struct Request {
    pub route: String,
    pub format: Format,
    pub max_bytes: Option<u64>,
}

/// The output being written.
enum Sink {
    Bundle(Box<format::Writer<BufWriter<File>>>),
    Bsmtp(super::bsmtp::Writer<BufWriter<File>>),
}

impl Sink {
    /// Bytes written, and bytes gathered but not yet written (their compressed size is
    /// not known yet: counted whole).
    fn sizes(&self) -> (u64, u64) {
        match self {
            Sink::Bundle(w) => w.sizes(),
            Sink::Bsmtp(w) => (w.written(), 0),
        }
    }

    /// Writes what is left; returns the file and the bytes written into it.
    fn finish(self) -> std::io::Result<(File, u64)> {
        let (out, bytes) = match self {
            Sink::Bundle(w) => {
                let (out, totals) = w.finish()?;
                (out, totals.bytes)
            }
            Sink::Bsmtp(w) => {
                let bytes = w.written();
                (w.finish()?, bytes)
            }
        };
        Ok((out.into_inner().map_err(|e| e.into_error())?, bytes))
    }
}

/// One batch's fate.
#[derive(Default)]
struct Written {
    included: Vec<Claim>,
    left: Vec<Claim>,
    damaged: Vec<(QueueId, String)>,
    /// Recipients whose sender asked to hear of success, where the output cannot carry
    /// the request on (BSMTP).
    relayed: Vec<(QueueId, usize)>,
    raw_bytes: u64,
}

/// Exports `request.route`'s waiting mail into `out`.
pub async fn export(
    spool: &Spool,
    queue: &QueueHandle,
    peers: &Arc<Peers>,
    request: Request,
    out: File,
) -> Result<Exported, String> {
    let id = QueueId::generate(std::time::SystemTime::now()).to_string();
    let (sink, peer) = open(peers, &request, &id, out)?;
    let mut all = Written::default();
    let written = fill(spool, queue, &request, sink, &mut all).await;
    let left = std::mem::take(&mut all.left);
    let damaged = std::mem::take(&mut all.damaged);
    let damaged_count = damaged.len() as u64;
    if !damaged.is_empty() {
        let answered = Answered {
            results: Vec::new(),
            host: None,
            relayed: Vec::new(),
            damaged,
        };
        let _ = queue.answers(request.route.clone(), answered).await;
    }
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let mut everything = std::mem::take(&mut all.included);
            everything.extend(left);
            give_back(
                queue,
                everything,
                &format!("the bundle could not be written: {e}"),
            )
            .await;
            return Err(format!("writing the bundle: {e}"));
        }
    };
    let left_messages = distinct(&left) as u64;
    let reason = match request.max_bytes {
        Some(n) => format!("left for a later bundle: --max-bytes {n} reached"),
        None => "left for a later bundle".into(),
    };
    give_back(queue, left, &reason).await;
    let messages = distinct(&all.included);
    let report = Exported {
        bundle: (request.format == Format::Bundle && messages > 0).then(|| id.clone()),
        peer,
        messages: messages as u64,
        recipients: all.included.len() as u64,
        bytes,
        raw_bytes: all.raw_bytes,
        left: left_messages,
        damaged: damaged_count,
    };
    settle(queue, peers, &request, &id, all).await?;
    Ok(report)
}

/// The output, its header written: a bundle for the route's peer, or a BSMTP batch.
fn open(
    peers: &Peers,
    request: &Request,
    id: &str,
    out: File,
) -> Result<(Sink, Option<String>), String> {
    let out = BufWriter::new(out);
    match request.format {
        Format::Bsmtp => Ok((Sink::Bsmtp(super::bsmtp::Writer::new(out)), None)),
        Format::Bundle => {
            let peer = peers.for_route(&request.route).ok_or_else(|| {
                format!(
                    "no [[bundle_peer]] takes route {:?}: name it in a peer's routes",
                    request.route
                )
            })?;
            let header = Header {
                kind: Kind::Mail,
                id: id.to_owned(),
                node: peers.node.clone(),
                to: peer.node.clone(),
                created_at: now_unix(),
                route: Some(request.route.clone()),
                compression: format::COMPRESSION.into(),
                auth: format::AUTH.into(),
            };
            let writer = format::Writer::new(out, &peer.key, &header)
                .map_err(|e| format!("writing the bundle: {e}"))?;
            Ok((Sink::Bundle(Box::new(writer)), Some(peer.node.clone())))
        }
    }
}

/// Claims and writes batches until nothing waits or the output is full, then makes the
/// output durable; returns the bytes written. Whatever it claimed is in `all`, written
/// or not, whether it succeeds or fails.
async fn fill(
    spool: &Spool,
    queue: &QueueHandle,
    request: &Request,
    mut sink: Sink,
    all: &mut Written,
) -> Result<u64, String> {
    let limit = request.max_bytes.unwrap_or(u64::MAX);
    loop {
        let claims = queue
            .claim_for_bundle(&request.route, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if claims.is_empty() {
            break;
        }
        let spool = spool.clone();
        let (back, batch, result) = tokio::task::spawn_blocking(move || {
            let mut batch = Written::default();
            let result = write_batch(&spool, &mut sink, claims, limit, &mut batch);
            (sink, batch, result)
        })
        .await
        .map_err(|e| e.to_string())?;
        sink = back;
        let full = !batch.left.is_empty();
        merge(all, batch);
        result.map_err(|e| e.to_string())?;
        if full {
            break;
        }
    }
    tokio::task::spawn_blocking(move || {
        let (file, bytes) = sink.finish()?;
        if file.metadata()?.is_file() {
            file.sync_all()?;
        }
        Ok::<_, std::io::Error>(bytes)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Records what the output now carries.
async fn settle(
    queue: &QueueHandle,
    peers: &Peers,
    request: &Request,
    id: &str,
    all: Written,
) -> Result<(), String> {
    match request.format {
        Format::Bundle => {
            let until = now_unix() + peers.resend_after.as_secs() as i64;
            let recipients = all
                .included
                .iter()
                .map(|c| (c.message_id, c.position))
                .collect();
            queue
                .bundled(recipients, id, until)
                .await
                .map_err(|e| format!("the bundle is written, but marking its mail failed: {e}"))?;
        }
        Format::Bsmtp => {
            let delivered =
                Classified::decided(Outcome::Delivered, "written to a BSMTP batch", "2.0.0");
            let results = all
                .included
                .into_iter()
                .map(|c| (c, delivered.clone()))
                .collect();
            answer_by_lane(queue, results, None, all.relayed).await;
        }
    }
    Ok(())
}

/// Claims that go back to the queue, not attempted.
async fn give_back(queue: &QueueHandle, claims: Vec<Claim>, reason: &str) {
    let unsent = Classified::decided(Outcome::Unsent, reason, "4.0.0");
    let results = claims.into_iter().map(|c| (c, unsent.clone())).collect();
    answer_by_lane(queue, results, None, Vec::new()).await;
}

/// Hands results to the queue owner, a lane at a time, and waits until they are
/// recorded.
pub(super) async fn answer_by_lane(
    queue: &QueueHandle,
    results: Vec<(Claim, Classified)>,
    host: Option<&str>,
    relayed: Vec<(QueueId, usize)>,
) {
    let mut lanes: BTreeMap<String, Vec<(Claim, Classified)>> = BTreeMap::new();
    for (claim, classified) in results {
        lanes
            .entry(claim.lane.clone())
            .or_default()
            .push((claim, classified));
    }
    for (lane, results) in lanes {
        let answered = Answered {
            results,
            host: host.map(str::to_owned),
            relayed: relayed.clone(),
            damaged: Vec::new(),
        };
        let _ = queue.answers(lane, answered).await;
    }
}

/// Writes a batch's messages while they fit under `limit`; the rest are `left`.
fn write_batch(
    spool: &Spool,
    sink: &mut Sink,
    claims: Vec<Claim>,
    limit: u64,
    out: &mut Written,
) -> std::io::Result<()> {
    let fs = spool.fs().as_ref();
    let mut groups: Vec<Vec<Claim>> = Vec::new();
    for c in claims {
        match groups.last_mut() {
            Some(g) if g[0].message_id == c.message_id => g.push(c),
            _ => groups.push(vec![c]),
        }
    }
    let mut groups = groups.into_iter();
    for group in groups.by_ref() {
        let id = group[0].message_id;
        let path = spool.layout().message_path(id);
        let loaded = read_stored(fs, &path).and_then(|s| read_body(fs, &path, &s).map(|b| (s, b)));
        let (stored, content) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                out.damaged.push((id, e.to_string()));
                continue;
            }
        };
        let e = &stored.envelope;
        let item = match sink {
            Sink::Bundle(_) => {
                let record = MessageRecord {
                    id: id.to_string(),
                    received_at: e.received_at,
                    sender: e.sender.to_string(),
                    recipients: group
                        .iter()
                        .filter_map(|c| {
                            e.recipients
                                .get(c.position)
                                .map(|r| BundledRecipient::new(c.position, r))
                        })
                        .collect(),
                    body: e.body,
                    smtputf8: e.smtputf8,
                    envid: e.envid.clone(),
                    ret: e.ret,
                    sha256: record::sha256(&content),
                };
                record::encode_message(&record, &content)
            }
            Sink::Bsmtp(_) => Vec::new(),
        };
        let size = if item.is_empty() {
            content.len() as u64 + 64 * group.len() as u64
        } else {
            item.len() as u64
        };
        if !fits(sink, size, limit)? {
            out.left.extend(group);
            break;
        }
        out.raw_bytes += content.len() as u64;
        match sink {
            Sink::Bundle(w) => w.add(&item)?,
            Sink::Bsmtp(w) => {
                let to: Vec<&Mailbox> = group
                    .iter()
                    .filter_map(|c| e.recipients.get(c.position).map(|r| &r.address))
                    .collect();
                w.add(&e.sender, &to, &content)?;
                for c in &group {
                    let notify = e.recipients.get(c.position).and_then(|r| r.notify.as_ref());
                    if notify.is_some_and(|n| n.wants(NotifyOn::Success)) {
                        out.relayed.push((id, c.position));
                    }
                }
            }
        }
        out.included.extend(group);
    }
    for group in groups {
        out.left.extend(group);
    }
    Ok(())
}

/// Whether `size` more bytes stay within `limit`, compressing what is gathered first
/// when only its uncompressed size says no.
fn fits(sink: &mut Sink, size: u64, limit: u64) -> std::io::Result<bool> {
    let (written, pending) = sink.sizes();
    if written.saturating_add(pending).saturating_add(size) <= limit {
        return Ok(true);
    }
    if let Sink::Bundle(w) = sink
        && pending > 0
    {
        w.seal_chunk()?;
        let (written, _) = w.sizes();
        return Ok(written.saturating_add(size) <= limit);
    }
    Ok(false)
}

fn merge(into: &mut Written, batch: Written) {
    into.included.extend(batch.included);
    into.left.extend(batch.left);
    into.damaged.extend(batch.damaged);
    into.relayed.extend(batch.relayed);
    into.raw_bytes += batch.raw_bytes;
}

fn distinct(claims: &[Claim]) -> usize {
    let mut n = 0;
    let mut last = None;
    for c in claims {
        if last != Some(c.message_id) {
            n += 1;
            last = Some(c.message_id);
        }
    }
    n
}
