//! Many messages over one connection, pipelined across transactions when the upstream
//! offers CHUNKING: a batch costs about one round trip instead of one per message, which
//! is what a long thin link needs. Writing and reading run at once, so a large batch
//! cannot deadlock on full socket buffers. The writer stays within a bounded window of
//! transactions whose outcomes are not yet durably recorded by the caller, which bounds
//! what a crash can deliver twice whatever the disk's latency: an answered transaction
//! leaves the window only once its outcome is on disk.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

use super::client::{Connection, Outgoing};
use super::content::{Content, PIECE};
use super::outcome::{Classified, Event, Outcome, Phase, classify};
use crate::smtp::response::Response;

/// How far the writer may run ahead of what is recorded: at most this many
/// transactions, and this many bytes, whose outcomes are not yet durable. That is what a
/// crash can repeat (the upstream commits what it has read after we die), so the window
/// is bounded, and kept near what the link needs: twice the messages answered per round
/// trip, measured as the replies come (`Window`), so a fast path keeps a few in flight
/// while a long thin one keeps enough to stay busy. 1 MiB fills 600 ms at 13 Mbit/s.
pub const WINDOW_MESSAGES: usize = 32;
pub const WINDOW_BYTES: usize = 1 << 20;
/// The smallest window: one transaction being answered while the next is on its way.
const MIN_WINDOW: usize = 8;

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
        let mut expected = 0;
        // Message index and recipient count of each transaction sent, in order, and the
        // bytes each puts on the wire.
        let mut plan = Vec::new();
        let mut transactions = Vec::new();
        for (i, (m, refused)) in batch.iter().zip(&refusals).enumerate() {
            if refused.is_some() {
                continue;
            }
            let mut head = self.mail_line(m);
            for r in m.recipients {
                head.push_str(&self.rcpt_line(r));
            }
            head.push_str(&format!("BDAT {} LAST\r\n", m.content.len()));
            expected += m.recipients.len() + 3;
            plan.push((i, m.recipients.len()));
            transactions.push((head, m.content));
        }
        let t = self.timeouts.clone();
        let (mut read_half, mut write_half) = tokio::io::split(&mut self.stream);
        let reader = &mut self.reader;
        // The writer stays at most a window ahead of what is recorded (`durable` counts
        // the transactions whose outcomes are on disk; `stopped` says the reader gave up).
        let stopped = AtomicBool::new(false);
        let reader_done = Notify::new();
        let window = Mutex::new(self.window.take().unwrap_or_else(|| Window::new(self.rtt)));
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
                            consumed += needed;
                            answered_here += 1;
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
            for (k, (head, content)) in transactions.iter().enumerate() {
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
                    tokio::select! {
                        changed = durable.changed() => if changed.is_err() { return None },
                        _ = reader_done.notified() => {}
                    }
                }
                let written = write_transaction(&mut write_half, head, content, &t).await;
                if let Err(failure) = written {
                    return Some(failure);
                }
                sent_bytes.push(sent_bytes[k] + head.len() + content.len() as usize + 6);
                window.lock().expect("not poisoned").written(Instant::now());
            }
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

        let failure = read_failure.or(write_failure);
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for (m, refused) in batch.iter().zip(refusals) {
            if let Some(event) = refused {
                out.push(vec![classify(Phase::Mail, &event); m.recipients.len()]);
                continue;
            }
            out.push(transaction_outcomes(
                m.recipients.len(),
                &mut replies,
                failure.as_ref(),
            ));
        }
        out
    }
}

/// Writes one transaction: its commands, its content (one write when small and in
/// memory, else a piece at a time, each under the data block timeout, RFC 5321
/// §4.5.3.2.5), and the RSET that closes it.
async fn write_transaction<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    head: &str,
    content: &Content<'_>,
    t: &super::client::ClientTimeouts,
) -> Result<(), Classified> {
    let broken = |why: String| classify(Phase::Mail, &Event::Broken(why));
    let mut put = async |bytes: &[u8]| -> Result<(), Classified> {
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
        put(&piece[..n]).await?;
    }
    put(b"RSET\r\n").await
}

/// The spool file could not be read mid-transaction: the chunk cannot be completed, so
/// the connection is given up. Our failure, not the upstream's: not an attempt.
pub(super) fn unreadable(e: &std::io::Error) -> Classified {
    Classified {
        outcome: Outcome::Unsent,
        scope: super::outcome::Scope::Connection,
        reason: format!("reading the spool file: {e}"),
        status: "4.3.0".into(),
    }
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

/// The pipelining window's measure of the path: the shortest time a transaction took to
/// be answered once written (the round trip, unloaded), and the rate at which answers
/// come. Keeping `2 × rate × round trip` in flight fills the link and no more.
pub(super) struct Window {
    written: VecDeque<Instant>,
    answers: VecDeque<Instant>,
    rtt: Duration,
}

impl Window {
    /// Recent answers the rate is taken over.
    const RATE_SPAN: usize = 8;
    /// A round trip this long is a long thin link: start with the whole window, as
    /// waiting to measure it would cost round trips there; a shorter path starts small.
    const LONG_PATH: Duration = Duration::from_millis(200);
    const START: usize = 8;

    pub(super) fn new(rtt: Duration) -> Window {
        Window {
            written: VecDeque::new(),
            answers: VecDeque::new(),
            rtt,
        }
    }

    fn written(&mut self, at: Instant) {
        self.written.push_back(at);
    }

    fn answered(&mut self, at: Instant) {
        if let Some(sent) = self.written.pop_front() {
            let took = at.saturating_duration_since(sent);
            if self.rtt.is_zero() || took < self.rtt {
                self.rtt = took;
            }
        }
        self.answers.push_back(at);
        if self.answers.len() > Self::RATE_SPAN {
            self.answers.pop_front();
        }
    }

    /// Transactions that may be unanswered now.
    fn limit(&self) -> usize {
        let (Some(first), Some(last)) = (self.answers.front(), self.answers.back()) else {
            return self.start();
        };
        if self.answers.len() < 3 {
            return self.start();
        }
        let span = last
            .saturating_duration_since(*first)
            .as_secs_f64()
            .max(1e-6);
        let rate = (self.answers.len() - 1) as f64 / span;
        let needed = (2.0 * rate * self.rtt.as_secs_f64()).ceil() as usize + 1;
        needed.clamp(MIN_WINDOW, WINDOW_MESSAGES)
    }

    fn start(&self) -> usize {
        if self.rtt >= Self::LONG_PATH {
            WINDOW_MESSAGES
        } else {
            Self::START
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(rtt_ms: u64, every_ms: u64, n: u64) -> usize {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_millis(rtt_ms));
        for i in 0..n {
            w.written(start + Duration::from_millis(i * every_ms));
        }
        for i in 0..n {
            w.answered(start + Duration::from_millis(i * every_ms + rtt_ms));
        }
        w.limit()
    }

    #[test]
    fn the_window_follows_the_path() {
        assert_eq!(
            Window::new(Duration::ZERO).limit(),
            Window::START,
            "unmeasured: start small"
        );
        assert_eq!(
            Window::new(Duration::from_millis(600)).limit(),
            WINDOW_MESSAGES,
            "a long round trip starts wide"
        );
        // Loopback: answers a millisecond apart, a tenth of one to come back.
        assert_eq!(feed(0, 1, 20), MIN_WINDOW);
        // 600 ms round trip, a 4 KiB message every 33 ms at 1 Mbit/s: 2 × 30 × 0.6 ≈ 37.
        assert_eq!(feed(600, 33, 20), WINDOW_MESSAGES);
        // 100 ms round trip, one every 20 ms: 2 × 50 × 0.1 + 1 = 11.
        assert_eq!(feed(100, 20, 20), 11);
    }
}
