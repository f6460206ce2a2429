//! Many messages over one connection, pipelined across transactions when the upstream
//! offers CHUNKING: a batch costs about one round trip instead of one per message, which
//! is what a long thin link needs (the pipelined run itself is `pipeline.rs`). Without
//! CHUNKING the messages go one by one. Between ferrymail nodes, large messages go one by
//! one after the pipelined ones, resumable and compressed (`ferry_send.rs`). Whichever
//! way, a message's content goes only within the window of what the caller has durably
//! recorded, which bounds what a crash can deliver twice.

use tokio::sync::watch;

use super::client::{Connection, Outgoing};
use super::content::Content;
use super::outcome::{Classified, Event, Phase, classify};
use super::pipeline::{Pipelined, transaction_outcomes};
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
        mut track: Tracker<'_>,
    ) -> Vec<Vec<Classified>> {
        if !self.uses_chunking() {
            return self.send_one_by_one(batch, &mut track).await;
        }
        let plan = self.plan(batch);
        let (replies, failure) = self
            .send_pipelined(batch, &plan.pipelined, track.answered, &mut track.durable)
            .await;
        let answered = plan.pipelined.answered_by(replies.len());
        let out = plan.outcomes(batch, replies, failure.as_ref());
        self.send_alone(batch, &plan, out, failure, answered, &mut track)
            .await
    }

    /// Each message once every earlier one is recorded: one accepted and unrecorded at a
    /// time, so a crash repeats at most it, and recording overlaps the next envelope's
    /// round trip.
    async fn send_one_by_one(
        &mut self,
        batch: &[Outgoing<'_>],
        track: &mut Tracker<'_>,
    ) -> Vec<Vec<Classified>> {
        let mut out = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            let mut recorded = track.durable.clone();
            let ready = async move {
                let _ = recorded.wait_for(|n| *n >= i).await;
            };
            match self.send_when(m, ready).await {
                Ok(outcomes) => {
                    (track.answered)(i, &outcomes);
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
        out
    }

    /// Which messages are refused here, which go alone, and the transactions of the rest.
    fn plan<'b>(&self, batch: &[Outgoing<'b>]) -> Plan<'b> {
        let ferry = self.ferry();
        let mut plan = Plan::default();
        for (i, m) in batch.iter().enumerate() {
            let refused = self.refusal(m);
            let alone = refused.is_none()
                && (ferry.zstd || ferry.resume)
                && matches!(m.content, Content::File(_));
            if refused.is_none() && !alone {
                plan.pipelined.plan.push((i, m.recipients.len()));
                plan.pipelined
                    .transactions
                    .push((self.envelope(m), m.content));
            }
            plan.refusals.push(refused);
            plan.alone.push(alone);
        }
        plan
    }

    /// The messages that go alone, after the pipelined ones (`out` holds every other
    /// message's outcomes), each once the `answered` before it are recorded. After a
    /// failure they go no more.
    async fn send_alone(
        &mut self,
        batch: &[Outgoing<'_>],
        plan: &Plan<'_>,
        mut out: Vec<Vec<Classified>>,
        mut failure: Option<Classified>,
        mut answered: usize,
        track: &mut Tracker<'_>,
    ) -> Vec<Vec<Classified>> {
        for (i, m) in batch.iter().enumerate().filter(|(i, _)| plan.alone[*i]) {
            if let Some(f) = &failure {
                out[i] = vec![f.clone(); m.recipients.len()];
                continue;
            }
            let mut recorded = track.durable.clone();
            let earlier = answered;
            let ready = async move {
                let _ = recorded.wait_for(|n| *n >= earlier).await;
            };
            match self.send_ferried(m, ready).await {
                Ok(outcomes) => {
                    (track.answered)(i, &outcomes);
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

/// How a batch goes: per message, whether the upstream cannot take it (it is answered
/// here and never sent) and whether it goes alone; the transactions of the rest.
#[derive(Default)]
struct Plan<'b> {
    refusals: Vec<Option<Event>>,
    alone: Vec<bool>,
    pipelined: Pipelined<'b>,
}

impl Plan<'_> {
    /// Every message's outcomes from the pipelined `replies`: a refusal's, its
    /// transaction's (`failure` for what went unanswered), or none yet for those that go
    /// alone.
    fn outcomes(
        &self,
        batch: &[Outgoing<'_>],
        replies: Vec<Response>,
        failure: Option<&Classified>,
    ) -> Vec<Vec<Classified>> {
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for ((m, refused), alone) in batch.iter().zip(&self.refusals).zip(&self.alone) {
            if let Some(event) = refused {
                out.push(vec![classify(Phase::Mail, event); m.recipients.len()]);
            } else if *alone {
                out.push(Vec::new()); // sent after
            } else {
                out.push(transaction_outcomes(
                    m.recipients.len(),
                    &mut replies,
                    failure,
                ));
            }
        }
        out
    }
}
