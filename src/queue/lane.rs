//! A lane is what one connection serves: a relay route (smarthost, a route's `via`) is
//! one lane; direct MX has a lane per destination domain. A lane's runner opens the
//! connection, delivers its claims, settles the results, then claims more of its own
//! mail and carries on over the same connection until nothing of it is due: a backlog
//! costs one connection set-up, not one per claim. At most one runner per lane exists
//! at a time (the scheduler's rule), so a flush or ETRN never starts a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::open_domains::OpenDomains;
use super::retry::RetryPolicy;
use super::settle::{Policy, settle};
use crate::delivery::client::{ClientSettings, Connection};
use crate::delivery::connect::{Us, open_mx, open_relay};
use crate::delivery::mx::MxResolver;
use crate::delivery::outcome::{Classified, Outcome, Scope};
use crate::delivery::route::{Route, Router, Target};
use crate::delivery::runner::{Progress, deliver};
use crate::link::Link;
use crate::link::gate::Evidence;
use crate::link::probe::probe;
use crate::spool::claims::{Claim, Decide, Disposition};
use crate::spool::{Spool, now_unix};

/// How long a claim lasts before its recipients are due again (a stuck delivery).
pub const LEASE: Duration = Duration::from_secs(3600);
/// Most recipients a lane claims at a time.
pub const LANE_CLAIM: usize = 2000;

/// What one connection serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane {
    pub route: String,
    /// The destination domain, for direct MX.
    pub domain: Option<String>,
}

impl Lane {
    pub fn of(route: &Route, domain: &str) -> Lane {
        Lane {
            route: route.name.clone(),
            domain: match route.target {
                Target::Relay { .. } => None,
                Target::Mx { .. } => Some(domain.to_ascii_lowercase()),
            },
        }
    }

    pub fn is_mx(&self) -> bool {
        self.domain.is_some()
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.domain {
            Some(d) => write!(f, "{} ({d})", self.route),
            None => f.write_str(&self.route),
        }
    }
}

/// Everything a lane needs, shared by all of them.
pub struct Deliverer {
    pub spool: Spool,
    pub router: Router,
    pub settings: HashMap<String, ClientSettings>,
    pub resolver: Arc<MxResolver>,
    pub us: Us,
    pub retry: RetryPolicy,
    pub hostname: String,
    /// Domains whose hold routes a flush or ETRN has opened.
    pub open_domains: Arc<OpenDomains>,
    pub progress: Arc<Progress>,
    pub link: Arc<Link>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set at shutdown: runners finish what they hold and claim nothing more.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// How a lane's run ended, for the scheduler's log.
#[derive(Clone, Debug, Default)]
pub struct LaneReport {
    /// Recipients delivered.
    pub delivered: usize,
}

impl Deliverer {
    fn policy(&self) -> Policy<'_> {
        Policy {
            spool: &self.spool,
            hostname: &self.hostname,
            retry: &self.retry,
            link_retry: self.link.probe_interval,
        }
    }

    /// The claim-time routing decision for one lane's own mail; everything else waits.
    fn only(self: &Arc<Self>, lane: &Lane) -> Box<Decide> {
        let this = self.clone();
        let lane = lane.clone();
        Box::new(move |domain: &str| {
            let route = this.router.route(domain);
            if Lane::of(route, domain) != lane
                || (route.hold && !this.open_domains.is_open(domain))
                || this.link.permit(&route.name) != crate::link::Permit::Open
            {
                return Disposition::Skip;
            }
            Disposition::Deliver {
                route: route.name.clone(),
            }
        })
    }

    async fn open(&self, lane: &Lane) -> Result<Connection, Classified> {
        let route = self
            .router
            .by_name(&lane.route)
            .expect("lanes come from routes");
        let settings = &self.settings[&lane.route];
        match (&route.target, &lane.domain) {
            (Target::Relay { host_port, .. }, _) => open_relay(host_port, settings).await,
            (Target::Mx { port, .. }, Some(domain)) => {
                open_mx(domain, *port, &self.resolver, settings, &self.us).await
            }
            (Target::Mx { .. }, None) => unreachable!("an MX lane names its domain"),
        }
    }

    fn count(&self, lane: &Lane, tally: &[(crate::metrics::Counted, u64)]) {
        for (outcome, n) in tally {
            self.metrics.count(&lane.route, *outcome, *n);
        }
    }

    /// After a connection broke: can the upstream still be reached? A failed probe
    /// closes the gate.
    async fn still_reachable(&self, lane: &Lane) -> bool {
        let Some(target) = self.link.probe_target(&lane.route) else {
            return true;
        };
        match probe(&target, &self.resolver, self.link.probe_timeout()).await {
            Ok(_) => true,
            Err(why) => {
                self.link
                    .observe(&lane.route, Evidence::Unreachable(why.clone()));
                self.link.note_flush_failed(&why);
                false
            }
        }
    }

    /// Runs `lane`, starting with `claims`, until none of its mail is due.
    pub async fn run(self: Arc<Self>, lane: Lane, claims: Vec<Claim>) -> LaneReport {
        let name = lane.to_string();
        self.progress.started(name.clone());
        let report = self.clone().run_lane(lane, claims).await;
        self.progress.finished(&name);
        report
    }

    async fn run_lane(self: Arc<Self>, lane: Lane, claims: Vec<Claim>) -> LaneReport {
        let mut report = LaneReport::default();
        let mut conn = match self.open(&lane).await {
            Ok(conn) => {
                let how = format!("connected to {}", conn.host);
                self.link.observe(&lane.route, Evidence::Reached(how));
                conn
            }
            Err(failure) => {
                tracing::info!(lane = %lane, reason = %failure.reason, "cannot connect");
                if failure.outcome == Outcome::LinkDown {
                    self.link
                        .observe(&lane.route, Evidence::Unreachable(failure.reason.clone()));
                    self.link.note_flush_failed(&failure.reason);
                }
                let results = claims.into_iter().map(|c| (c, failure.clone())).collect();
                let tally = settle(&self.policy(), results, None).await;
                self.count(&lane, &tally);
                return report;
            }
        };
        tracing::debug!(lane = %lane, host = %conn.host, "connected");
        let mut claims = claims;
        loop {
            let mut done = deliver(&mut conn, &self.spool, claims, &self.progress).await;
            report.delivered += done.delivered;
            let delivered = [(crate::metrics::Counted::Delivered, done.delivered as u64)];
            self.count(&lane, &delivered);
            self.metrics.sent(&lane.route, done.bytes);
            for notice in std::mem::take(&mut done.relayed) {
                super::notices::send(&self.spool, &self.hostname, notice).await;
            }
            if done.connection_lost && !lane.is_mx() && !self.still_reachable(&lane).await {
                // The connection died with our link: offline, not the upstream's failure.
                for (_, c) in &mut done.rest {
                    if c.scope == Scope::Connection && c.outcome == Outcome::Deferred {
                        c.outcome = Outcome::LinkDown;
                    }
                }
            }
            let tally = settle(&self.policy(), done.rest, Some(&conn.host)).await;
            self.count(&lane, &tally);
            if done.connection_lost {
                return report;
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            claims = match self
                .spool
                .claim(
                    now_unix(),
                    LEASE.as_secs() as i64,
                    LANE_CLAIM,
                    self.only(&lane),
                    self.link.take_online_time(crate::link::ONLINE_TIME_CAP),
                )
                .await
            {
                Ok(more) if !more.is_empty() => more,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(lane = %lane, error = %e, "claiming more mail failed");
                    break;
                }
            };
        }
        conn.quit().await;
        report
    }
}
