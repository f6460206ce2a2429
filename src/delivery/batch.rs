//! Many messages over one connection, pipelined across transactions when the upstream
//! offers CHUNKING: a batch costs about one round trip instead of one per message, which
//! is what a long thin link needs. Writing and reading run at once, so a large batch
//! cannot deadlock on full socket buffers. The writer stays within a bounded window of
//! transactions whose outcomes are not yet durably recorded by the caller, which bounds
//! what a crash can deliver twice whatever the disk's latency: an answered transaction
//! leaves the window only once its outcome is on disk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

use super::client::{Connection, Outgoing, with_mail_params};
use super::content::{Content, PIECE, unreadable};
use super::link_fit::{Cork, LinkFit, SLICE};
use super::outcome::{Classified, Event, Outcome, Phase, classify};
use super::window::{WINDOW_BYTES, Window};
use crate::ferry::PARAM_ZSTD;
use crate::ferry::compress::Compressor;
use crate::ferry::history::{dictionary, queued_as};
use crate::smtp::line::MAX_COMMAND_LINE;
use crate::smtp::response::Response;

/// How a caller follows a batch as it goes.
pub struct Tracker<'a> {
    /// Called with message `i`'s outcomes as soon as its replies are all in, while later
    /// messages are still on the wire.
    pub answered: &'a mut (dyn FnMut(usize, &[Classified]) + Send),
    /// How many answered messages (in the order they were answered) have their outcomes
    /// durably recorded: the window is counted from it.
    pub durable: watch::Receiver<usize>,
}

impl Connection {
    /// `send_batch` for a caller that records nothing (a benchmark, a test): every answer
    /// counts as durable at once.
    pub async fn send_batch_unrecorded(&mut self, batch: &[Outgoing<'_>]) -> Vec<Vec<Classified>> {
        let (durable_tx, durable) = watch::channel(0usize);
        let mut answered = move |_: usize, _: &[Classified]| {
            durable_tx.send_modify(|n| *n += 1);
        };
        let track = Tracker {
            answered: &mut answered,
            durable,
        };
        self.send_batch(batch, track).await
    }

    /// Sends many messages, pipelined across messages when the upstream offers CHUNKING:
    /// every transaction (MAIL, RCPTs, `BDAT n LAST`, RSET) goes out back to back, up to
    /// the window ahead of what is recorded, while the replies are read at the same time,
    /// so a batch costs about one round trip, not one per message. The RSET closes a
    /// transaction the upstream kept open after refusing every recipient; it costs a
    /// reply line, not a wait. Without CHUNKING the messages go one by one (`send`), each
    /// recorded before the next is sent. Returns outcomes per message, per recipient; a
    /// connection failure part-way applies to every message not yet answered.
    pub async fn send_batch(
        &mut self,
        batch: &[Outgoing<'_>],
        track: Tracker<'_>,
    ) -> Vec<Vec<Classified>> {
        let Tracker {
            answered: done,
            mut durable,
        } = track;
        if !self.uses_chunking() {
            let mut out = Vec::with_capacity(batch.len());
            for (i, m) in batch.iter().enumerate() {
                // The content goes only once every earlier message is recorded: one
                // accepted and unrecorded at a time, so a crash repeats at most it, and
                // recording overlaps the next envelope's round trip.
                let recorded = durable.clone();
                let ready = async move {
                    let mut recorded = recorded;
                    let _ = recorded.wait_for(|n| *n >= i).await;
                };
                match self.send_when(m, ready).await {
                    Ok(outcomes) => {
                        done(i, &outcomes);
                        out.push(outcomes);
                    }
                    Err(failure) => {
                        out.extend(
                            batch[i..]
                                .iter()
                                .map(|m| vec![failure.clone(); m.recipients.len()]),
                        );
                        break;
                    }
                }
            }
            return out;
        }
        // Messages the upstream cannot take are answered here and never sent.
        let refusals: Vec<Option<Event>> = batch.iter().map(|m| self.refusal(m)).collect();
        // Between ferrymail nodes, large messages go one by one after the pipelined
        // ones, resumable and compressed (`ferry_send.rs`); small ones go compressed.
        let ferry = self.ferry();
        let alone: Vec<bool> = batch
            .iter()
            .zip(&refusals)
            .map(|(m, refused)| {
                refused.is_none()
                    && (ferry.zstd || ferry.resume)
                    && matches!(m.content, Content::File(_))
            })
            .collect();
        let mut expected = 0;
        // Message index and recipient count of each transaction sent, in order, and the
        // bytes each puts on the wire.
        let mut plan = Vec::new();
        let mut transactions = Vec::new();
        for (i, (m, refused)) in batch.iter().zip(&refusals).enumerate() {
            if refused.is_some() || alone[i] {
                continue;
            }
            let head = self.envelope(m);
            expected += m.recipients.len() + 3;
            plan.push((i, m.recipients.len()));
            transactions.push((head, m.content));
        }
        let t = self.timeouts.clone();
        let mut fit = self.take_fit();
        let (mut read_half, mut write_half) = tokio::io::split(&mut self.stream);
        let reader = &mut self.reader;
        // The writer stays at most a window ahead of what is recorded (`durable` counts
        // the transactions whose outcomes are on disk; `stopped` says the reader gave up).
        let stopped = AtomicBool::new(false);
        let reader_done = Notify::new();
        let paced = fit.is_some();
        let window = Mutex::new(
            self.window
                .take()
                .unwrap_or_else(|| Window::new(self.rtt, paced)),
        );
        // XZSTD: small messages seen committed, for later ones to be compressed against.
        let answered_small = Mutex::new(std::mem::take(&mut self.answered_small));
        let first = self.transactions;
        self.transactions += transactions.len() as u64;
        let read_replies = async {
            let mut replies: Vec<Response> = Vec::with_capacity(expected);
            let mut buf = [0u8; 8192];
            let (mut answered_here, mut consumed) = (0, 0);
            while replies.len() < expected {
                match reader.take_response() {
                    Ok(Some(r)) => {
                        let closing = r.code == 421;
                        replies.push(r);
                        // A transaction whose replies are all in is reported at once.
                        while let Some(&(index, rcpts)) = plan.get(answered_here) {
                            let needed = rcpts + 3;
                            if replies.len() - consumed < needed {
                                break;
                            }
                            let mut these = replies[consumed..consumed + needed].iter().cloned();
                            done(index, &transaction_outcomes(rcpts, &mut these, None));
                            let n = answered_here;
                            answered_here += 1;
                            let end = &replies[consumed + rcpts + 1];
                            if let (true, Content::Bytes(content)) =
                                (ferry.zstd, batch[index].content)
                                && end.is_positive()
                                && let Some(id) = queued_as(&end.lines.join(" "))
                            {
                                let mut small = answered_small.lock().expect("not poisoned");
                                small.push(first + n as u64, id.to_owned(), content);
                            }
                            consumed += needed;
                            window
                                .lock()
                                .expect("not poisoned")
                                .answered(Instant::now());
                        }
                        if closing {
                            break;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return (
                            replies,
                            Some(classify(Phase::EndOfData, &Event::Protocol(e.to_string()))),
                        );
                    }
                }
                let n = match tokio::time::timeout(t.end_of_data, read_half.read(&mut buf)).await {
                    Ok(Ok(0)) => {
                        return (
                            replies,
                            Some(classify(
                                Phase::EndOfData,
                                &Event::Broken("connection closed".into()),
                            )),
                        );
                    }
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        return (
                            replies,
                            Some(classify(Phase::EndOfData, &Event::Broken(e.to_string()))),
                        );
                    }
                    Err(_) => {
                        return (
                            replies,
                            Some(classify(
                                Phase::EndOfData,
                                &Event::Broken("no reply in time".into()),
                            )),
                        );
                    }
                };
                reader.push(&buf[..n]);
            }
            (replies, None)
        };
        let write = async {
            let mut sent_bytes = Vec::with_capacity(transactions.len() + 1);
            sent_bytes.push(0usize);
            let (mut packed, mut compressor) = (Vec::new(), None);
            // Full segments on a long thin link; what is held goes before any wait.
            let cork = fit.as_ref().map(Cork::new);
            for (k, (envelope, content)) in transactions.iter().enumerate() {
                loop {
                    if stopped.load(Ordering::Acquire) {
                        return None;
                    }
                    let recorded = (*durable.borrow_and_update()).min(k);
                    let unrecorded = sent_bytes[k] - sent_bytes[recorded];
                    let limit = window.lock().expect("not poisoned").limit();
                    if k == recorded || (k - recorded < limit && unrecorded < WINDOW_BYTES) {
                        break;
                    }
                    tracing::trace!(k, recorded, limit, unrecorded, "window full");
                    if let Some(cork) = &cork {
                        cork.push();
                    }
                    tokio::select! {
                        changed = durable.changed() => if changed.is_err() { return None },
                        _ = reader_done.notified() => {}
                    }
                }
                let (head, content) = match ferry.zstd {
                    true => {
                        let mut refs = answered_small
                            .lock()
                            .expect("not poisoned")
                            .refs(first + k as u64);
                        fit_line(envelope, &mut refs);
                        match pack(content, &refs, &mut compressor, &mut packed) {
                            Ok(()) => (
                                format!(
                                    "{}BDAT {} LAST\r\n",
                                    with_zstd(envelope, &refs),
                                    packed.len()
                                ),
                                Content::Bytes(&packed),
                            ),
                            Err(failure) => return Some(failure),
                        }
                    }
                    false => (
                        format!("{envelope}BDAT {} LAST\r\n", content.len()),
                        *content,
                    ),
                };
                let (head, content) = (&head, &content);
                let reader_gone = || stopped.load(Ordering::Acquire);
                let out = &mut write_half;
                match write_transaction(out, &mut fit, head, content, &t, reader_gone).await {
                    Ok(()) => {}
                    Err(Unwritten::Failed(failure)) => return Some(failure),
                    Err(Unwritten::ReaderGone) => return None,
                }
                sent_bytes.push(sent_bytes[k] + head.len() + content.len() as usize + 6);
                window.lock().expect("not poisoned").written(Instant::now());
            }
            drop(cork);
            match tokio::time::timeout(t.data_block, write_half.flush()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(classify(Phase::Mail, &Event::Broken(e.to_string()))),
                Err(_) => Some(classify(
                    Phase::Mail,
                    &Event::Broken("write timed out".into()),
                )),
            }
        };
        let read = async {
            let result = read_replies.await;
            // Wake a writer waiting for room in the window: nothing more will come.
            stopped.store(true, Ordering::Release);
            reader_done.notify_one();
            result
        };
        let (write_failure, (replies, read_failure)) = tokio::join!(write, read);
        // What was learnt of the path serves the connection's next batch.
        self.window = Some(window.into_inner().expect("not poisoned"));
        self.keep_fit(fit);
        self.answered_small = answered_small.into_inner().expect("not poisoned");

        let mut failure = read_failure.or(write_failure);
        // Transactions whose replies are all in, each MAIL, its RCPTs, BDAT and RSET.
        let mut answered = plan
            .iter()
            .scan(0, |needed, &(_, rcpts)| {
                *needed += rcpts + 3;
                Some(*needed)
            })
            .take_while(|needed| *needed <= replies.len())
            .count();
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for ((m, refused), alone) in batch.iter().zip(refusals).zip(&alone) {
            if let Some(event) = refused {
                out.push(vec![classify(Phase::Mail, &event); m.recipients.len()]);
            } else if *alone {
                out.push(Vec::new()); // sent below
            } else {
                out.push(transaction_outcomes(
                    m.recipients.len(),
                    &mut replies,
                    failure.as_ref(),
                ));
            }
        }
        for (i, m) in batch.iter().enumerate().filter(|(i, _)| alone[*i]) {
            if let Some(f) = &failure {
                out[i] = vec![f.clone(); m.recipients.len()];
                continue;
            }
            let mut recorded = durable.clone();
            let earlier = answered;
            let ready = async move {
                let _ = recorded.wait_for(|n| *n >= earlier).await;
            };
            match self.send_ferried(m, ready).await {
                Ok(outcomes) => {
                    done(i, &outcomes);
                    answered += 1;
                    out[i] = outcomes;
                }
                Err(f) => {
                    out[i] = vec![f.clone(); m.recipients.len()];
                    failure = Some(f);
                }
            }
        }
        out
    }
}

/// `content` (in memory: only large messages are in files, and those go alone) as one
/// zstd frame into `packed`, against the contents of `refs` when there are any. The
/// plain compressor is kept for the next message (a frame ended leaves it ready for
/// another); one with a dictionary serves one message.
fn pack(
    content: &Content<'_>,
    refs: &[(String, std::sync::Arc<Vec<u8>>)],
    plain: &mut Option<Compressor>,
    packed: &mut Vec<u8>,
) -> Result<(), Classified> {
    let Content::Bytes(raw) = content else {
        unreachable!("file contents go alone over XFERRY")
    };
    packed.clear();
    let failed = |e: std::io::Error| unreadable(&e);
    if !refs.is_empty() {
        let dictionary = dictionary(refs.iter().map(|(_, c)| c.as_slice()));
        let mut c = Compressor::with_dictionary(&dictionary).map_err(failed)?;
        return c.piece(raw, true, packed).map_err(failed);
    }
    let c = match plain {
        Some(c) => c,
        None => plain.insert(Compressor::new().map_err(failed)?),
    };
    c.piece(raw, true, packed).map_err(failed)
}

/// Drops the oldest of `refs` until the MAIL line, with XZSTD naming them, stays within
/// RFC 5321 §4.5.3.1.4's 512 octets (a long sender and ENVID leave less room).
fn fit_line(envelope: &str, refs: &mut Vec<(String, std::sync::Arc<Vec<u8>>)>) {
    let mail = envelope.find("\r\n").unwrap_or(envelope.len());
    let param = |refs: &[(String, _)]| {
        PARAM_ZSTD.len() + 2 + refs.iter().map(|(id, _)| id.len() + 1).sum::<usize>()
    };
    while !refs.is_empty() && mail + param(refs) + 2 > MAX_COMMAND_LINE {
        refs.remove(0);
    }
}

/// `envelope` (MAIL, then RCPTs) with XZSTD on its MAIL, naming `refs`.
fn with_zstd(envelope: &str, refs: &[(String, std::sync::Arc<Vec<u8>>)]) -> String {
    let ids: Vec<&str> = refs.iter().map(|(id, _)| id.as_str()).collect();
    let param = match ids.is_empty() {
        true => PARAM_ZSTD.to_owned(),
        false => format!("{PARAM_ZSTD}={}", ids.join(",")),
    };
    with_mail_params(envelope, &format!(" {param}"))
}

/// Why a transaction was not written whole.
enum Unwritten {
    Failed(Classified),
    /// The reader gave up while the writer waited for room on the link.
    ReaderGone,
}

impl From<Classified> for Unwritten {
    fn from(failure: Classified) -> Unwritten {
        Unwritten::Failed(failure)
    }
}

/// Writes one transaction: its commands, its content (one write when small and in
/// memory, else a piece at a time, each under the data block timeout, RFC 5321
/// §4.5.3.2.5), and the RSET that closes it. On a long thin link (`fit`), no more goes
/// unacknowledged than the link holds: a small transaction is let through whole, a
/// large one a slice at a time.
async fn write_transaction<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    fit: &mut Option<LinkFit>,
    head: &str,
    content: &Content<'_>,
    t: &super::client::ClientTimeouts,
    reader_gone: impl Fn() -> bool + Copy,
) -> Result<(), Unwritten> {
    let broken = |why: String| Unwritten::from(classify(Phase::Mail, &Event::Broken(why)));
    let mut put = async |bytes: &[u8]| -> Result<(), Unwritten> {
        if let Some(fit) = fit.as_mut()
            && !fit.room_for(bytes.len(), reader_gone).await
        {
            return Err(Unwritten::ReaderGone);
        }
        match tokio::time::timeout(t.data_block, out.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(broken(e.to_string())),
            Err(_) => Err(broken("write timed out".into())),
        }
    };
    if let Content::Bytes(bytes) = content
        && bytes.len() <= PIECE
    {
        let mut wire = Vec::with_capacity(head.len() + bytes.len() + 6);
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(bytes);
        wire.extend_from_slice(b"RSET\r\n");
        return put(&wire).await;
    }
    put(head.as_bytes()).await?;
    let mut reader = content.reader().await.map_err(|e| unreadable(&e))?;
    let mut piece = vec![0u8; PIECE];
    loop {
        let n = reader.read(&mut piece).await.map_err(|e| unreadable(&e))?;
        if n == 0 {
            break;
        }
        for slice in piece[..n].chunks(SLICE) {
            put(slice).await?;
        }
    }
    put(b"RSET\r\n").await
}

/// Reads one pipelined transaction's replies (MAIL, RCPTs, BDAT LAST, RSET) into
/// per-recipient outcomes. Where the replies ran out, `failure` (or a 421 among them)
/// applies to whatever has no answer.
fn transaction_outcomes(
    rcpts: usize,
    replies: &mut impl Iterator<Item = Response>,
    failure: Option<&Classified>,
) -> Vec<Classified> {
    let broken = || {
        failure
            .cloned()
            .unwrap_or_else(|| classify(Phase::EndOfData, &Event::Broken("no reply".into())))
    };
    let mut take = |phase: Phase| -> Option<Classified> {
        let r = replies.next()?;
        Some(classify(phase, &Event::Reply(r)))
    };
    let Some(mail) = take(Phase::Mail) else {
        return vec![broken(); rcpts];
    };
    let mut outcomes: Vec<Classified> = (0..rcpts)
        .map(|_| take(Phase::Rcpt).unwrap_or_else(broken))
        .collect();
    let end = take(Phase::EndOfData).unwrap_or_else(broken);
    let _rset = take(Phase::Mail);
    if mail.outcome != Outcome::Delivered {
        return vec![mail; rcpts];
    }
    for o in &mut outcomes {
        if o.outcome == Outcome::Delivered {
            *o = end.clone();
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_give_way_to_a_long_mail_line() {
        let refs = |n: usize| -> Vec<(String, std::sync::Arc<Vec<u8>>)> {
            (0..n)
                .map(|i| (format!("1K1M52SYE98K3FZ{i}"), Default::default()))
                .collect()
        };
        let short = "MAIL FROM:<a@b.example> SIZE=4000\r\nRCPT TO:<c@d.example>\r\n";
        let mut four = refs(4);
        fit_line(short, &mut four);
        assert_eq!(four.len(), 4);
        let line = with_zstd(short, &four);
        assert!(line.starts_with("MAIL FROM:<a@b.example> SIZE=4000 XZSTD=1K1M52SYE98K3FZ0,"));
        let long = format!(
            "MAIL FROM:<{}@b.example> SIZE=4000 ENVID={}\r\n",
            "a".repeat(200),
            "e".repeat(220)
        );
        let mut some = refs(4);
        fit_line(&long, &mut some);
        assert!(some.len() < 4);
        let line = with_zstd(&long, &some);
        assert!(
            line.find("\r\n").unwrap() + 2 <= MAX_COMMAND_LINE,
            "{}",
            line.len()
        );
        assert_eq!(
            some.last().map(|(id, _)| id.as_str()),
            Some("1K1M52SYE98K3FZ3"),
            "the newest stay"
        );
    }
}
