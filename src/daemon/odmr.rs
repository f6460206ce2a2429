//! The hub's ODMR turns (RFC 2645), behind the listener's `Turns`: which domains an
//! ATRN takes (those the station may claim that have mail waiting on a `via = "odmr"`
//! route), one turn per domain at a time (`OdmrState` keeps the locks and, for
//! `status`, each domain's last turn), and the turn itself: the station greets on its
//! own connection, and the same client that delivers everywhere else delivers its mail
//! there, claimed a batch at a time from the queue owner, every outcome recorded by it.
//! A connection lost mid-turn counts as no attempt: what was not delivered waits for the
//! next turn.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::control::OdmrDomain;
use crate::delivery::client::{ClientSettings, Connection};
use crate::delivery::outcome::{Outcome, Scope};
use crate::delivery::runner::{Answered, DeliveryTotals, deliver};
use crate::queue::handle::QueueHandle;
use crate::server::stream::Stream;
use crate::server::turns::{self as odmr, OdmrUsers, Ticket, Turns};
use crate::smtp::reply::Reply;
use crate::spool::{Spool, now_unix};

/// How long a station has to greet after the turn.
const TURN_GREETING: std::time::Duration = std::time::Duration::from_secs(60);

/// What a domain's turns have done, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DomainTurns {
    /// Unix seconds of the last turn's start.
    pub last_turn: i64,
    /// Recipients delivered by turns since the daemon started.
    pub moved: u64,
    /// The station that took it last.
    pub station: String,
}

/// Locks and records of ODMR turns, kept across reloads.
#[derive(Debug, Default)]
pub struct OdmrState {
    turning: Mutex<HashSet<String>>,
    domains: Mutex<BTreeMap<String, DomainTurns>>,
    /// The lanes of `via = "odmr"` routes, as configured now.
    lanes: Mutex<Vec<String>>,
}

impl OdmrState {
    pub(crate) fn set_lanes(&self, lanes: Vec<String>) {
        *self.lanes.lock().expect("not poisoned") = lanes;
    }

    pub fn lanes(&self) -> Vec<String> {
        self.lanes.lock().expect("not poisoned").clone()
    }

    /// Every domain that has mail waiting (`waiting`, by domain) or had a turn.
    pub fn report(&self, waiting: Vec<(String, i64)>) -> Vec<OdmrDomain> {
        let turns = self.domains.lock().expect("not poisoned").clone();
        let mut out: BTreeMap<String, OdmrDomain> = BTreeMap::new();
        for (domain, t) in turns {
            out.insert(
                domain.clone(),
                OdmrDomain {
                    domain,
                    waiting: 0,
                    last_turn: Some(t.last_turn),
                    station: Some(t.station),
                    moved: t.moved,
                },
            );
        }
        for (domain, n) in waiting {
            out.entry(domain.clone())
                .or_insert_with(|| OdmrDomain {
                    domain,
                    ..OdmrDomain::default()
                })
                .waiting += n;
        }
        out.into_values().collect()
    }

    fn note(&self, domain: &str, f: impl FnOnce(&mut DomainTurns)) {
        let mut all = self.domains.lock().expect("not poisoned");
        f(all.entry(domain.to_owned()).or_default());
    }
}

/// The domains of one turn, unlocked when dropped.
struct Locks {
    state: Arc<OdmrState>,
    domains: Vec<String>,
}

impl Drop for Locks {
    fn drop(&mut self) {
        let mut turning = self.state.turning.lock().expect("not poisoned");
        for d in &self.domains {
            turning.remove(d);
        }
    }
}

pub struct TurnService {
    pub users: OdmrUsers,
    /// The lanes of `via = "odmr"` routes.
    pub lanes: Vec<String>,
    /// How to talk to a station once the connection has turned.
    pub settings: ClientSettings,
    pub queue: QueueHandle,
    pub spool: Spool,
    pub state: Arc<OdmrState>,
    pub progress: Arc<DeliveryTotals>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl TurnService {
    /// Each domain with mail waiting for a turn, and its lane.
    async fn waiting(&self) -> Result<Vec<(String, String)>, Reply> {
        let mut out = Vec::new();
        for lane in &self.lanes {
            let domains = self.spool.turn_domains(lane).await.map_err(|e| {
                tracing::error!(error = %e, "ODMR: reading waiting domains failed");
                Reply::new(451, None, "").with_text("Unable to process ATRN request now")
            })?;
            out.extend(domains.into_iter().map(|d| (d, lane.clone())));
        }
        Ok(out)
    }

    async fn grant(&self, user: &str, asked: &[String]) -> Result<Ticket, Reply> {
        if let Some(d) = asked.iter().find(|d| !self.users.may_claim(user, d)) {
            return Err(odmr::refused(user, d));
        }
        let chosen: Vec<(String, String)> = self
            .waiting()
            .await?
            .into_iter()
            .filter(|(d, _)| {
                if asked.is_empty() {
                    self.users.may_claim(user, d)
                } else {
                    asked.iter().any(|a| a == d)
                }
            })
            .collect();
        if chosen.is_empty() {
            return Err(odmr::NO_MAIL);
        }
        let domains: Vec<String> = chosen.iter().map(|(d, _)| d.clone()).collect();
        {
            let mut turning = self.state.turning.lock().expect("not poisoned");
            if let Some(d) = domains.iter().find(|d| turning.contains(*d)) {
                return Err(odmr::busy(d));
            }
            turning.extend(domains.iter().cloned());
        }
        let locks = Locks {
            state: self.state.clone(),
            domains: domains.clone(),
        };
        Ok(Ticket {
            user: user.to_owned(),
            domains,
            lanes: chosen.into_iter().map(|(_, lane)| lane).collect(),
            locks: Box::new(locks),
        })
    }

    async fn turn(&self, ticket: Ticket, stream: Stream, peer: SocketAddr) {
        let host = format!("{}[{peer}]", ticket.user);
        // A station that says nothing after the turn holds its domains' locks: it gets
        // less time to greet than a server we called.
        let mut settings = self.settings.clone();
        settings.timeouts.banner = TURN_GREETING;
        let mut conn = match Connection::turned(stream, host, peer, &settings).await {
            Ok(conn) => conn,
            Err(failure) => {
                // Nothing was claimed yet: the mail waits for the next turn as it was.
                tracing::warn!(peer = %peer, user = %ticket.user, reason = %failure.reason, "ODMR turn: the station did not answer as a server");
                return;
            }
        };
        for (domain, lane) in ticket.domains.iter().zip(&ticket.lanes) {
            let (domain, lane) = (domain.as_str(), lane.as_str());
            let now = now_unix();
            self.state.note(domain, |t| {
                t.last_turn = now;
                t.station = ticket.user.clone();
            });
            self.metrics.odmr_turn(domain, now);
            loop {
                let claims = self.queue.turn(lane.to_owned(), domain.to_owned()).await;
                if claims.is_empty() {
                    break;
                }
                let queue = self.queue.clone();
                let key = lane.to_owned();
                let record = move |answered: Answered| queue.answers(key.clone(), answered);
                let mut done =
                    deliver(&mut conn, &self.spool, claims, &self.progress, &record).await;
                let moved = done.delivered as u64;
                self.state.note(domain, |t| t.moved += moved);
                self.metrics
                    .count(lane, crate::metrics::Counted::Delivered, moved);
                self.metrics.sent(lane, done.bytes);
                self.metrics.odmr_delivered(domain, moved);
                if done.connection_lost {
                    // The station went away: not its failure to take the mail, no attempt.
                    for (_, c) in &mut done.rest {
                        if c.scope == Scope::Connection {
                            c.outcome = Outcome::LinkDown;
                        }
                    }
                }
                if !done.rest.is_empty() {
                    let answered = Answered {
                        results: done.rest,
                        host: Some(conn.host.clone()),
                        ..Answered::default()
                    };
                    let _ = self.queue.answers(lane.to_owned(), answered).await;
                }
                if done.connection_lost {
                    tracing::info!(peer = %peer, user = %ticket.user, domain, "ODMR turn cut off; the rest waits for the next turn");
                    return;
                }
            }
        }
        conn.quit().await;
        tracing::info!(peer = %peer, user = %ticket.user, "ODMR turn done");
    }
}

impl Turns for TurnService {
    fn users(&self) -> &OdmrUsers {
        &self.users
    }

    fn begin<'a>(
        &'a self,
        user: &'a str,
        asked: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Result<Ticket, Reply>> + Send + 'a>> {
        Box::pin(self.grant(user, asked))
    }

    fn run(
        &self,
        ticket: Ticket,
        stream: Stream,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.turn(ticket, stream, peer))
    }
}
