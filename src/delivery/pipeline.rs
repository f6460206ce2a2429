//! One pipelined batch on the wire: the writer sends every transaction (MAIL, RCPTs,
//! `BDAT n LAST`, RSET) back to back while the reader takes the replies at the same
//! time, so a large batch cannot deadlock on full socket buffers. The writer stays within
//! a bounded window of transactions whose outcomes are not yet durably recorded by the
//! caller, which bounds what a crash can deliver twice whatever the disk's latency: an
//! answered transaction leaves the window only once its outcome is on disk. Between
//! ferrymail nodes each message goes as its own zstd frame, against small messages the
//! upstream already committed on this connection (docs/xferry.md).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::client::{ClientTimeouts, Connection, Outgoing, with_mail_params};
use super::content::{Content, PIECE, unreadable};
use super::link_fit::{Cork, LinkFit, SLICE};
use super::outcome::{Classified, Event, Outcome, Phase, classify};
use super::window::{WINDOW_BYTES, Window};
use crate::ferry::PARAM_ZSTD;
use crate::ferry::compress::Compressor;
use crate::ferry::history::{self, dictionary, queued_as};
use crate::smtp::line::MAX_COMMAND_LINE;
use crate::smtp::response::{Response, ResponseReader};

/// The transactions of a batch that go pipelined.
#[derive(Default)]
pub(super) struct Pipelined<'b> {
    /// Each one's envelope (MAIL, then RCPTs) and content, in the order they go.
    pub transactions: Vec<(String, Content<'b>)>,
    /// Each one's message (its index in the batch) and recipient count.
    pub plan: Vec<(usize, usize)>,
}

impl Pipelined<'_> {
    /// The replies the transactions get: each MAIL, its RCPTs, BDAT and RSET.
    fn expected(&self) -> usize {
        self.plan.iter().map(|(_, rcpts)| rcpts + 3).sum()
    }

    /// How many transactions, from the first, have all their replies among `replies`.
    pub(crate) fn answered_by(&self, replies: usize) -> usize {
        self.plan
            .iter()
            .scan(0, |needed, &(_, rcpts)| {
                *needed += rcpts + 3;
                Some(*needed)
            })
            .take_while(|needed| *needed <= replies)
            .count()
    }
}

/// What the writer and the reader of one batch share.
struct Pipeline<'p, 'b> {
    batch: &'p [Outgoing<'b>],
    pipelined: &'p Pipelined<'b>,
    timeouts: ClientTimeouts,
    /// Each message is compressed (XZSTD).
    zstd: bool,
    /// The connection's count of transactions before this batch's first.
    first: u64,
    window: Mutex<Window>,
    /// XZSTD: small messages seen committed, for later ones to be compressed against.
    answered_small: Mutex<history::Answered>,
    /// The reader gave up: nothing more will be answered.
    stopped: AtomicBool,
    reader_done: Notify,
}

/// The zstd frame being made, and the plain compressor kept for the next message.
#[derive(Default)]
struct Packer {
    packed: Vec<u8>,
    plain: Option<Compressor>,
}

impl Connection {
    /// Sends `pipelined`'s transactions, telling `answered` each message's outcomes as
    /// soon as its replies are all in; `durable` counts the answered messages whose
    /// outcomes are recorded. Returns the replies, in order, and the failure that
    /// ended the run early, if one did. What the run learnt of the path (the window, the
    /// link fit, XZSTD's history) stays with the connection for its next batch.
    pub(super) async fn send_pipelined(
        &mut self,
        batch: &[Outgoing<'_>],
        pipelined: &Pipelined<'_>,
        answered: &mut (dyn FnMut(usize, &[Classified]) + Send),
        durable: &mut tokio::sync::watch::Receiver<usize>,
    ) -> (Vec<Response>, Option<Classified>) {
        let mut fit = self.take_fit();
        let paced = fit.is_some();
        let run = Pipeline {
            batch,
            pipelined,
            timeouts: self.timeouts.clone(),
            zstd: self.ferry().zstd,
            first: self.transactions,
            window: Mutex::new(
                self.window
                    .take()
                    .unwrap_or_else(|| Window::new(self.rtt, paced)),
            ),
            answered_small: Mutex::new(std::mem::take(&mut self.answered_small)),
            stopped: AtomicBool::new(false),
            reader_done: Notify::new(),
        };
        self.transactions += pipelined.transactions.len() as u64;
        let (mut read_half, mut write_half) = tokio::io::split(&mut self.stream);
        let write = run.write_all(&mut write_half, &mut fit, durable);
        let read = async {
            let result = run
                .read_replies(&mut self.reader, &mut read_half, answered)
                .await;
            // Wake a writer waiting for room in the window: nothing more will come.
            run.stopped.store(true, Ordering::Release);
            run.reader_done.notify_one();
            result
        };
        let (write_failure, (replies, read_failure)) = tokio::join!(write, read);
        self.window = Some(run.window.into_inner().expect("not poisoned"));
        self.keep_fit(fit);
        self.answered_small = run.answered_small.into_inner().expect("not poisoned");
        (replies, read_failure.or(write_failure))
    }
}

impl Pipeline<'_, '_> {
    async fn read_replies(
        &self,
        reader: &mut ResponseReader,
        read_half: &mut (impl AsyncRead + Unpin),
        answered: &mut (dyn FnMut(usize, &[Classified]) + Send),
    ) -> (Vec<Response>, Option<Classified>) {
        let expected = self.pipelined.expected();
        let mut replies: Vec<Response> = Vec::with_capacity(expected);
        let mut buf = [0u8; 8192];
        // Transactions reported, and the replies they took.
        let mut reported = (0, 0);
        while replies.len() < expected {
            match reader.take_response() {
                Ok(Some(r)) => {
                    let closing = r.code == 421;
                    replies.push(r);
                    self.report_answered(&replies, &mut reported, answered);
                    if closing {
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    let failure = classify(Phase::EndOfData, &Event::Protocol(e.to_string()));
                    return (replies, Some(failure));
                }
            }
            match self.read_more(read_half, &mut buf).await {
                Ok(n) => reader.push(&buf[..n]),
                Err(failure) => return (replies, Some(failure)),
            }
        }
        (replies, None)
    }

    /// More reply bytes, within the end-of-data timeout.
    async fn read_more(
        &self,
        read_half: &mut (impl AsyncRead + Unpin),
        buf: &mut [u8],
    ) -> Result<usize, Classified> {
        let broken = |why: String| classify(Phase::EndOfData, &Event::Broken(why));
        match tokio::time::timeout(self.timeouts.end_of_data, read_half.read(buf)).await {
            Ok(Ok(0)) => Err(broken("connection closed".into())),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(broken(e.to_string())),
            Err(_) => Err(broken("no reply in time".into())),
        }
    }

    /// Reports every transaction whose replies are now all in; `reported` counts the
    /// transactions reported and the replies they took.
    fn report_answered(
        &self,
        replies: &[Response],
        reported: &mut (usize, usize),
        answered: &mut (dyn FnMut(usize, &[Classified]) + Send),
    ) {
        let (n, consumed) = reported;
        while let Some(&(index, rcpts)) = self.pipelined.plan.get(*n) {
            let needed = rcpts + 3;
            if replies.len() - *consumed < needed {
                break;
            }
            let these = &replies[*consumed..*consumed + needed];
            answered(
                index,
                &transaction_outcomes(rcpts, &mut these.iter().cloned(), None),
            );
            self.remember_small(*n, index, &these[rcpts + 1]);
            *n += 1;
            *consumed += needed;
            self.window
                .lock()
                .expect("not poisoned")
                .answered(Instant::now());
        }
    }

    /// XZSTD: transaction `n` (message `index`), committed by the upstream as `end`
    /// says, may serve later messages as their dictionary.
    fn remember_small(&self, n: usize, index: usize, end: &Response) {
        if let (true, Content::Bytes(content)) = (self.zstd, self.batch[index].content)
            && end.is_positive()
            && let Some(id) = queued_as(&end.lines.join(" "))
        {
            let mut small = self.answered_small.lock().expect("not poisoned");
            small.push(self.first + n as u64, id.to_owned(), content);
        }
    }

    /// Writes every transaction, each when the window has room for it. `None` when all
    /// went out, or the reader gave up first (its failure says why).
    async fn write_all(
        &self,
        out: &mut (impl AsyncWrite + Unpin),
        fit: &mut Option<LinkFit>,
        durable: &mut tokio::sync::watch::Receiver<usize>,
    ) -> Option<Classified> {
        let transactions = &self.pipelined.transactions;
        let mut sent_bytes = Vec::with_capacity(transactions.len() + 1);
        sent_bytes.push(0usize);
        let mut packer = Packer::default();
        // Full segments on a long thin link; what is held goes before any wait.
        let cork = fit.as_ref().map(Cork::new);
        for (k, (envelope, content)) in transactions.iter().enumerate() {
            if !self
                .wait_for_room(k, &sent_bytes, durable, cork.as_ref())
                .await
            {
                return None;
            }
            let (head, content) = match self.compose(k, envelope, content, &mut packer) {
                Ok(composed) => composed,
                Err(failure) => return Some(failure),
            };
            let reader_gone = || self.stopped.load(Ordering::Acquire);
            match write_transaction(out, fit, &head, &content, &self.timeouts, reader_gone).await {
                Ok(()) => {}
                Err(Unwritten::Failed(failure)) => return Some(failure),
                Err(Unwritten::ReaderGone) => return None,
            }
            sent_bytes.push(sent_bytes[k] + head.len() + content.len() as usize + 6);
            self.window
                .lock()
                .expect("not poisoned")
                .written(Instant::now());
        }
        drop(cork);
        let broken = |why: String| Some(classify(Phase::Mail, &Event::Broken(why)));
        match tokio::time::timeout(self.timeouts.data_block, out.flush()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => broken(e.to_string()),
            Err(_) => broken("write timed out".into()),
        }
    }

    /// Waits until transaction `k` may go: the first one not yet recorded always may,
    /// later ones while the window has room (`sent_bytes[i]`: the bytes before
    /// transaction `i`). False when the reader gave up.
    async fn wait_for_room(
        &self,
        k: usize,
        sent_bytes: &[usize],
        durable: &mut tokio::sync::watch::Receiver<usize>,
        cork: Option<&Cork>,
    ) -> bool {
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return false;
            }
            let recorded = (*durable.borrow_and_update()).min(k);
            let unrecorded = sent_bytes[k] - sent_bytes[recorded];
            let limit = self.window.lock().expect("not poisoned").limit();
            if k == recorded || (k - recorded < limit && unrecorded < WINDOW_BYTES) {
                return true;
            }
            tracing::trace!(k, recorded, limit, unrecorded, "window full");
            if let Some(cork) = cork {
                cork.push();
            }
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return false },
                _ = self.reader_done.notified() => {}
            }
        }
    }

    /// Transaction `k`'s commands and content as they go on the wire: as they are, or
    /// with XZSTD its content one zstd frame (in `packer`) naming its dictionary.
    fn compose<'x>(
        &self,
        k: usize,
        envelope: &str,
        content: &Content<'x>,
        packer: &'x mut Packer,
    ) -> Result<(String, Content<'x>), Classified> {
        if !self.zstd {
            let head = format!("{envelope}BDAT {} LAST\r\n", content.len());
            return Ok((head, *content));
        }
        let mut refs = self
            .answered_small
            .lock()
            .expect("not poisoned")
            .refs(self.first + k as u64);
        fit_line(envelope, &mut refs);
        pack(content, &refs, &mut packer.plain, &mut packer.packed)?;
        let head = format!(
            "{}BDAT {} LAST\r\n",
            with_zstd(envelope, &refs),
            packer.packed.len()
        );
        Ok((head, Content::Bytes(&packer.packed)))
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
pub(super) fn transaction_outcomes(
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
