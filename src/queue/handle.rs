//! How everything else talks to the queue owner: the events it takes (flushes, operator
//! changes, a delivery's answers and its asks for more), what a flush asks for and
//! starts, and a cloneable handle that sends them and waits for the answers. Nothing but the owner changes recipient state;
//! everyone else holds a `QueueHandle`.

use tokio::sync::{mpsc, oneshot};

use super::jobs::{Change, ChangeOutcome};
use super::kit::OwnerSettings;
use crate::delivery::runner::Answered;
use crate::spool::claims::Claim;
use crate::spool::{QueueId, SpoolError};

/// What the queue owner is asked.
pub enum QueueEvent {
    Flush {
        target: FlushTarget,
        why: String,
        reply: Option<oneshot::Sender<Result<Started, SpoolError>>>,
    },
    Change {
        change: Change,
        reply: oneshot::Sender<Result<ChangeOutcome, SpoolError>>,
    },
    /// A runner asks for more of its lane's mail.
    More {
        lane: String,
        reply: oneshot::Sender<Vec<Claim>>,
    },
    /// An ODMR turn asks for `domain`'s waiting mail on `lane` (RFC 2645).
    Turn {
        lane: String,
        domain: String,
        reply: oneshot::Sender<Vec<Claim>>,
    },
    /// A runner's answers, to record; `reply` once they are durable.
    Answers {
        lane: String,
        answered: Answered,
        reply: oneshot::Sender<()>,
    },
    /// `route`'s waiting mail (of up to `limit` messages), claimed for a bundle.
    BundleClaim {
        route: String,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Claim>, SpoolError>>,
    },
    /// Claimed recipients written into bundle `bundle`: `bundled` until `until`.
    Bundled {
        recipients: Vec<(QueueId, usize)>,
        bundle: String,
        until: i64,
        reply: oneshot::Sender<Result<usize, SpoolError>>,
    },
    /// The recipients a receipt names, claimed for its outcomes (those still waiting).
    ClaimNamed {
        recipients: Vec<(QueueId, usize)>,
        reply: oneshot::Sender<Result<Vec<Claim>, SpoolError>>,
    },
    /// A reload: new routes and settings; `reply` once the owner has taken them.
    Reconfigure {
        settings: Box<OwnerSettings>,
        reply: oneshot::Sender<()>,
    },
}

/// How everything else talks to the queue owner.
#[derive(Clone)]
pub struct QueueHandle {
    events: mpsc::UnboundedSender<QueueEvent>,
}

impl QueueHandle {
    pub fn new() -> (QueueHandle, mpsc::UnboundedReceiver<QueueEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        (QueueHandle { events }, rx)
    }

    /// Starts a flush; answers once the mail it names is due.
    pub async fn flush(&self, target: FlushTarget, why: &str) -> Result<Started, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(QueueEvent::Flush {
            target,
            why: why.to_owned(),
            reply: Some(reply),
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Starts a flush without waiting for it (a signal, the trigger file).
    pub(crate) fn flush_soon(&self, target: FlushTarget, why: &str) {
        let _ = self.send(QueueEvent::Flush {
            target,
            why: why.to_owned(),
            reply: None,
        });
    }

    /// Hands the owner a reload's settings; returns once it has taken them.
    pub async fn reconfigure(&self, settings: OwnerSettings) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(QueueEvent::Reconfigure {
            settings: Box::new(settings),
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)
    }

    /// An operator's change; answers when it is done.
    pub async fn change(&self, change: Change) -> Result<ChangeOutcome, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(QueueEvent::Change { change, reply })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// `domain`'s waiting mail on `lane`, claimed for an ODMR turn (none: all taken).
    pub async fn turn(&self, lane: String, domain: String) -> Vec<Claim> {
        let (reply, rx) = oneshot::channel();
        if self
            .send(QueueEvent::Turn {
                lane,
                domain,
                reply,
            })
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The waiting mail of up to `limit` messages on `route`, claimed for a bundle.
    pub async fn claim_for_bundle(
        &self,
        route: &str,
        limit: usize,
    ) -> Result<Vec<Claim>, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(QueueEvent::BundleClaim {
            route: route.to_owned(),
            limit,
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Claimed recipients are in bundle `bundle` now, waiting for its receipt until
    /// `until`; returns how many were still claimed.
    pub async fn bundled(
        &self,
        recipients: Vec<(QueueId, usize)>,
        bundle: &str,
        until: i64,
    ) -> Result<usize, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(QueueEvent::Bundled {
            recipients,
            bundle: bundle.to_owned(),
            until,
            reply,
        })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Claims the recipients a receipt names that still wait for one.
    pub async fn claim_named(
        &self,
        recipients: Vec<(QueueId, usize)>,
    ) -> Result<Vec<Claim>, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(QueueEvent::ClaimNamed { recipients, reply })?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// More of `lane`'s due mail (none: the runner is done).
    pub async fn more(&self, lane: String) -> Vec<Claim> {
        let (reply, rx) = oneshot::channel();
        if self.send(QueueEvent::More { lane, reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Records `answered`; the receiver answers once it is durable (or dropped, when it
    /// could not be made so).
    pub fn answers(&self, lane: String, answered: Answered) -> oneshot::Receiver<()> {
        let (reply, rx) = oneshot::channel();
        let _ = self.send(QueueEvent::Answers {
            lane,
            answered,
            reply,
        });
        rx
    }

    fn send(&self, event: QueueEvent) -> Result<(), SpoolError> {
        self.events.send(event).map_err(|_| SpoolError::WriterGone)
    }
}

/// What a flush asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushTarget {
    All,
    /// One domain; with `subdomains`, those under it too (ETRN `@domain`).
    Domain {
        domain: String,
        subdomains: bool,
    },
}

impl std::fmt::Display for FlushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlushTarget::All => f.write_str("the whole queue"),
            FlushTarget::Domain {
                domain,
                subdomains: false,
            } => write!(f, "{domain}"),
            FlushTarget::Domain {
                domain,
                subdomains: true,
            } => write!(f, "{domain} and its subdomains"),
        }
    }
}

/// What a flush started. It answers at once: the mail it names becomes due a bounded
/// step at a time after the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// For a domain: its recipients waiting (held, queued or deferred), now on their way.
    /// For the whole queue: not counted (0).
    pub released: usize,
    /// A run for these routes was already going; this request joined it.
    pub coalesced: bool,
}
