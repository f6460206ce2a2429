//! Import: a bundle from a peer, read twice. The first pass checks it: its header names
//! a known peer and this node, authenticates under their key and is not too old; every
//! chunk's MAC holds. A chunk changed on purpose (its CRC holds, its MAC does not) or
//! an end line that does not authenticate refuses the whole bundle, so nothing of it is
//! imported; a chunk damaged in transit (its CRC fails), a garbled frame or a cut-off
//! end only costs the messages in it, which the receipt reports as unread. The second
//! pass commits each message of the good chunks through the spool's normal commit
//! (identity settled, a `Received:` added), a few at a time in parallel so the writer
//! can group them; a message whose recipients this node took before (by node, queue id
//! there and position there, `imported`) is not committed again. The receipt is written
//! only once everything it calls accepted is durable.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::format::{self, Frame, Header, Kind, Reader};
use super::peers::{Peer, Peers};
use super::record::{self, Accepted, MessageRecord, Receipt, Record};
use super::take::{Site, Taken, take_message};
use crate::spool::{IndexReader, QueueId, now_unix};

/// Messages committed at once.
const WORKERS: usize = 4;
/// Clocks of field stations drift: a bundle may say it was written this far ahead.
const CLOCK_SKEW: i64 = 86400;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// `mail` or `receipt`.
    pub kind: String,
    /// The bundle's id, and the node that wrote it.
    pub bundle: String,
    pub node: String,
    /// Mail: messages and recipients committed now.
    pub messages: u64,
    pub recipients: u64,
    /// Mail: recipients taken from an earlier bundle, not again.
    pub duplicates: u64,
    /// Mail: recipients refused, one line each.
    pub refused: Vec<String>,
    /// What could not be read or taken now: it comes again in a later bundle.
    pub unread: Vec<String>,
    /// Receipt: recipients now delivered, and bounced.
    pub delivered: u64,
    pub bounced: u64,
    /// Receipt: recipients it names that wait for no receipt here (final already).
    pub unknown: u64,
}

/// A bundle whose header and chunks were checked: where to read it again, and what of
/// it is good.
#[derive(Debug)]
struct Checked {
    header: Header,
    peer_index: usize,
    good: Vec<u64>,
    unread: Vec<String>,
}

/// Checks a bundle (first pass).
fn check(peers: &Peers, input: &mut File) -> Result<Checked, String> {
    let mut reader = Reader::open(BufReader::new(&mut *input)).map_err(|e| e.to_string())?;
    let header = reader.header().clone();
    if header.compression != format::COMPRESSION || header.auth != format::AUTH {
        return Err(format!(
            "bundle {} uses {} and {}; this ferrymail reads {} and {}",
            header.id,
            header.compression,
            header.auth,
            format::COMPRESSION,
            format::AUTH
        ));
    }
    let peer_index = peers
        .peers
        .iter()
        .position(|p| p.node.eq_ignore_ascii_case(&header.node))
        .ok_or_else(|| {
            format!(
                "bundle {} is from node {:?}, which is no [[bundle_peer]] of this node: refused",
                header.id, header.node
            )
        })?;
    if !header.to.eq_ignore_ascii_case(&peers.node) {
        return Err(format!(
            "bundle {} is for node {:?}; this node is {:?}",
            header.id, header.to, peers.node
        ));
    }
    if !reader.authenticate(&peers.peers[peer_index].key) {
        return Err(format!(
            "bundle {}: its header does not authenticate under the key shared with {:?} \
             (changed, or another key): nothing imported",
            header.id, header.node
        ));
    }
    let now = now_unix();
    if header.created_at < now - peers.max_age.as_secs() as i64 {
        return Err(format!(
            "bundle {} was written {}: older than bundle.max_age, refused as a replay",
            header.id,
            crate::smtp::date::at(header.created_at)
        ));
    }
    if header.created_at > now + CLOCK_SKEW {
        return Err(format!(
            "bundle {} says it was written in the future ({}): check the clocks",
            header.id,
            crate::smtp::date::at(header.created_at)
        ));
    }
    let tampered = |what: String| {
        format!(
            "bundle {}: {what} does not authenticate although it is intact: it was changed; \
             nothing imported",
            header.id
        )
    };
    let (mut good, mut unread) = (Vec::new(), Vec::new());
    let mut expected = 0u64;
    while let Some(frame) = reader
        .next_frame()
        .map_err(|e| format!("reading the bundle: {e}"))?
    {
        match frame {
            Frame::Chunk(c) => {
                if c.intact && !c.authentic {
                    return Err(tampered(format!("chunk {}", c.seq)));
                }
                if c.seq != expected {
                    unread.push(format!("chunks {expected} to {} are missing", c.seq));
                }
                expected = c.seq + 1;
                if c.authentic {
                    good.push(c.seq);
                } else {
                    unread.push(format!("chunk {} was damaged in transit", c.seq));
                }
            }
            Frame::End {
                chunks, authentic, ..
            } => {
                if !authentic {
                    return Err(tampered("its end line".into()));
                }
                if chunks != expected {
                    unread.push(format!(
                        "the bundle has {chunks} chunks; {expected} were found"
                    ));
                }
            }
            Frame::Truncated => {
                unread.push(format!("the bundle is cut off after chunk {expected}"))
            }
            Frame::Garbled(line) => unread.push(format!(
                "unreadable after chunk {expected} ({:?}): the rest is lost",
                line.chars().take(40).collect::<String>()
            )),
        }
    }
    Ok(Checked {
        header,
        peer_index,
        good,
        unread,
    })
}

/// The records of the good chunks, handed to `each` a chunk at a time (second pass).
fn for_each_chunk(
    input: &mut File,
    checked: &Checked,
    key: &format::Key,
    each: &mut dyn FnMut(Vec<Record<'_>>),
    unread: &mut Vec<String>,
) -> Result<(), String> {
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| format!("reading the bundle again: {e}"))?;
    let mut reader = Reader::open(BufReader::new(&mut *input)).map_err(|e| e.to_string())?;
    if !reader.authenticate(key) {
        return Err("the bundle changed while it was read".into());
    }
    while let Some(frame) = reader
        .next_frame()
        .map_err(|e| format!("reading the bundle: {e}"))?
    {
        let Frame::Chunk(chunk) = frame else { break };
        if !checked.good.contains(&chunk.seq) {
            continue;
        }
        let raw = match chunk.records() {
            Ok(raw) => raw,
            Err(e) => {
                unread.push(e);
                continue;
            }
        };
        let mut records = Vec::new();
        for r in record::decode(&raw) {
            match r {
                Ok(r) => records.push(r),
                Err(e) => unread.push(format!("chunk {}: {e}", chunk.seq)),
            }
        }
        each(records);
    }
    Ok(())
}

/// Makes `input` readable twice: a pipe is copied into an unnamed file in the spool.
fn rereadable(input: File, dir: &std::path::Path) -> std::io::Result<File> {
    if input.metadata()?.is_file() {
        return Ok(input);
    }
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut copy = File::from(fd);
    std::io::copy(&mut BufReader::new(input), &mut copy)?;
    copy.seek(SeekFrom::Start(0))?;
    Ok(copy)
}

/// What reading a bundle found, before its kind is acted on.
pub enum Read {
    Mail(Imported, Option<Vec<u8>>),
    Receipt(Imported, Vec<Receipt>),
}

/// Imports a bundle or reads a receipt (blocking: call on a blocking thread). For mail,
/// returns the receipt's bytes too (`None` when `want_receipt` is false).
pub fn import(site: &Site, input: File, want_receipt: bool) -> Result<Read, String> {
    let mut input = rereadable(input, &site.spool.layout().tmp)
        .map_err(|e| format!("reading the bundle: {e}"))?;
    let checked = check(&site.peers, &mut input)?;
    let peer = &site.peers.peers[checked.peer_index];
    let mut report = Imported {
        kind: match checked.header.kind {
            Kind::Mail => "mail".into(),
            Kind::Receipt => "receipt".into(),
        },
        bundle: checked.header.id.clone(),
        node: checked.header.node.clone(),
        unread: checked.unread.clone(),
        ..Imported::default()
    };
    let mut unread = Vec::new();
    match checked.header.kind {
        Kind::Receipt => {
            let mut receipts = Vec::new();
            for_each_chunk(
                &mut input,
                &checked,
                &peer.key,
                &mut |records| {
                    receipts.extend(records.into_iter().filter_map(|r| match r {
                        Record::Receipt(r) => Some(r),
                        Record::Message(..) => None,
                    }))
                },
                &mut unread,
            )?;
            report.unread.extend(unread);
            Ok(Read::Receipt(report, receipts))
        }
        Kind::Mail => {
            let mut receipt = Receipt {
                bundle: checked.header.id.clone(),
                ..Receipt::default()
            };
            for_each_chunk(
                &mut input,
                &checked,
                &peer.key,
                &mut |records| {
                    let messages: Vec<(&MessageRecord, &[u8])> = records
                        .iter()
                        .filter_map(|r| match r {
                            Record::Message(m, content) => Some((m.as_ref(), *content)),
                            Record::Receipt(_) => None,
                        })
                        .collect();
                    for taken in take_all(site, &checked.header, &messages) {
                        tally(&mut report, &mut receipt, taken);
                    }
                },
                &mut unread,
            )?;
            report.unread.extend(unread);
            receipt.unread = report.unread.clone();
            let bytes = want_receipt
                .then(|| write_receipt(&site.peers, peer, &receipt))
                .transpose()?;
            Ok(Read::Mail(report, bytes))
        }
    }
}

/// Commits a chunk's messages, `WORKERS` at a time.
fn take_all(site: &Site, header: &Header, messages: &[(&MessageRecord, &[u8])]) -> Vec<Taken> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(messages.len()));
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(messages.len()) {
            scope.spawn(|| {
                // What was taken before must be known, or a message could be taken twice:
                // without the index, nothing is taken now (it comes again).
                let index = IndexReader::open(site.spool.layout()).map_err(|e| e.to_string());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((record, content)) = messages.get(i) else {
                        break;
                    };
                    let taken = match &index {
                        Ok(index) => take_message(site, header, index.as_ref(), record, content),
                        Err(e) => Taken {
                            id: record.id.clone(),
                            unread: vec![format!("message {}: not taken now: {e}", record.id)],
                            ..Taken::default()
                        },
                    };
                    out.lock().expect("not poisoned").push(taken);
                }
            });
        }
    });
    out.into_inner().expect("not poisoned")
}

fn tally(report: &mut Imported, receipt: &mut Receipt, taken: Taken) {
    if !taken.committed.is_empty() {
        report.messages += 1;
        report.recipients += taken.committed.len() as u64;
    }
    report.duplicates += taken.duplicates.len() as u64;
    let mut positions: Vec<usize> = taken
        .committed
        .into_iter()
        .chain(taken.duplicates)
        .collect();
    positions.sort_unstable();
    if !positions.is_empty() {
        receipt.accepted.push(Accepted {
            id: taken.id.clone(),
            positions,
        });
    }
    for r in &taken.refused {
        report.refused.push(format!(
            "{} recipient {}: {} {}",
            r.id, r.position, r.status, r.reason
        ));
    }
    receipt.refused.extend(taken.refused);
    report.unread.extend(taken.unread);
}

/// The receipt, as a bundle of kind `receipt` for `peer`.
fn write_receipt(peers: &Peers, peer: &Peer, receipt: &Receipt) -> Result<Vec<u8>, String> {
    let header = Header {
        kind: Kind::Receipt,
        id: QueueId::generate(std::time::SystemTime::now()).to_string(),
        node: peers.node.clone(),
        to: peer.node.clone(),
        created_at: now_unix(),
        route: None,
        compression: format::COMPRESSION.into(),
        auth: format::AUTH.into(),
    };
    let mut w = format::Writer::new(Vec::new(), &peer.key, &header)
        .map_err(|e| format!("writing the receipt: {e}"))?;
    w.add(&record::encode_receipt(receipt))
        .and_then(|()| w.finish())
        .map(|(bytes, _)| bytes)
        .map_err(|e| format!("writing the receipt: {e}"))
}

#[cfg(test)]
mod tests;
