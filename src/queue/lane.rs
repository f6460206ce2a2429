//! A lane is what one connection serves: a relay route (smarthost, a route's `via`) is
//! one lane; direct MX has a lane per destination domain. Mail is placed on its lane
//! when it is committed, so the queue owner claims a lane's mail from an index. A
//! lane's runner opens the connection, delivers what it was given, hands every answer to
//! the queue owner to record, then asks the owner for more and carries on over the same
//! connection until nothing of the lane is due: a backlog costs one connection set-up,
//! not one per claim. The owner starts at most one runner per lane. The runner writes
//! nothing itself.

use std::sync::Arc;

use super::handle::QueueHandle;
use super::kit::Kit;
use crate::delivery::client::Connection;
use crate::delivery::connect::{open_mx, open_relay};
use crate::delivery::outcome::{Classified, Outcome};
use crate::delivery::route::{Route, Target};
use crate::delivery::runner::{Answered, deliver};
use crate::link::gate::Evidence;
use crate::link::probe::probe;
use crate::spool::claims::Claim;

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
                Target::Relay { .. } | Target::Odmr | Target::Bundle => None,
                Target::Mx { .. } => Some(domain.to_ascii_lowercase()),
            },
        }
    }

    /// The lane's name in the index: the route's name, then a space and the domain for
    /// MX (route names have no spaces; spool::sets::Scope::Route relies on the form).
    pub fn key(&self) -> String {
        match &self.domain {
            Some(d) => format!("{} {d}", self.route),
            None => self.route.clone(),
        }
    }

    pub fn parse(key: &str) -> Lane {
        match key.split_once(' ') {
            Some((route, domain)) => Lane {
                route: route.to_owned(),
                domain: Some(domain.to_owned()),
            },
            None => Lane {
                route: key.to_owned(),
                domain: None,
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

/// How a lane's run ended, for the owner's log.
#[derive(Clone, Debug, Default)]
pub struct LaneReport {
    /// Recipients delivered.
    pub delivered: usize,
}

/// Runs `lane`, starting with `claims`, until the owner has no more of it.
pub async fn run(kit: Arc<Kit>, owner: QueueHandle, lane: Lane, claims: Vec<Claim>) -> LaneReport {
    let name = lane.to_string();
    kit.progress.started(name.clone());
    let report = run_lane(&kit, &owner, &lane, claims).await;
    kit.progress.finished(&name);
    report
}

async fn run_lane(kit: &Kit, owner: &QueueHandle, lane: &Lane, claims: Vec<Claim>) -> LaneReport {
    let mut report = LaneReport::default();
    let key = lane.key();
    let record = move |answered: Answered| owner.answers(key.clone(), answered);
    let mut conn = match open(kit, lane).await {
        Ok(conn) => {
            let how = format!("connected to {}", conn.host);
            kit.link.observe(&lane.route, Evidence::Reached(how));
            conn
        }
        Err(failure) => {
            tracing::info!(lane = %lane, reason = %failure.reason, "cannot connect");
            if failure.outcome == Outcome::LinkDown {
                kit.link
                    .observe(&lane.route, Evidence::Unreachable(failure.reason.clone()));
                kit.link.note_flush_failed(&failure.reason);
            }
            let results = claims.into_iter().map(|c| (c, failure.clone())).collect();
            let _ = record(answered(results, None)).await;
            return report;
        }
    };
    tracing::debug!(lane = %lane, host = %conn.host, "connected");
    let mut claims = claims;
    loop {
        let mut done = deliver(&mut conn, &kit.spool, claims, &kit.progress, &record).await;
        report.delivered += done.delivered;
        let delivered = [(crate::metrics::Counted::Delivered, done.delivered as u64)];
        for (counted, n) in delivered {
            kit.metrics.count(&lane.route, counted, n);
        }
        kit.metrics.sent(&lane.route, done.bytes);
        if done.connection_lost && !lane.is_mx() && !still_reachable(kit, lane).await {
            // The connection died with our link: offline, not the upstream's failure.
            let rest = std::mem::take(&mut done.rest);
            done.rest = rest
                .into_iter()
                .map(|(claim, c)| (claim, c.with_our_link_down()))
                .collect();
        }
        if !done.rest.is_empty() {
            let _ = record(answered(done.rest, Some(conn.host.clone()))).await;
        }
        if done.connection_lost {
            return report;
        }
        if kit.shutdown.is_cancelled() {
            break;
        }
        claims = owner.more(lane.key()).await;
        if claims.is_empty() {
            break;
        }
    }
    conn.quit().await;
    report
}

fn answered(results: Vec<(Claim, Classified)>, host: Option<String>) -> Answered {
    Answered {
        results,
        host,
        ..Answered::default()
    }
}

async fn open(kit: &Kit, lane: &Lane) -> Result<Connection, Classified> {
    let route = kit
        .router
        .by_name(&lane.route)
        .expect("lanes come from routes");
    let settings = &kit.settings[&lane.route];
    match (&route.target, &lane.domain) {
        (Target::Relay { host_port, .. }, _) => open_relay(host_port, settings).await,
        (Target::Mx { port, .. }, Some(domain)) => {
            open_mx(domain, *port, &kit.resolver, settings, &kit.us).await
        }
        (Target::Mx { .. }, None) => unreachable!("an MX lane names its domain"),
        (Target::Odmr | Target::Bundle, _) => {
            unreachable!("the owner starts no runner for a route whose mail is collected")
        }
    }
}

/// After a connection broke: can the upstream still be reached? A failed probe closes
/// the gate.
async fn still_reachable(kit: &Kit, lane: &Lane) -> bool {
    let Some(target) = kit.link.probe_target(&lane.route) else {
        return true;
    };
    match probe(&target, &kit.resolver, kit.link.probe_timeout(&lane.route)).await {
        Ok(_) => true,
        Err(why) => {
            kit.link
                .observe(&lane.route, Evidence::Unreachable(why.clone()));
            kit.link.note_flush_failed(&why);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_key_names_its_route_and_mx_domain() {
        for lane in [
            Lane {
                route: "upstream".into(),
                domain: None,
            },
            Lane {
                route: "mx".into(),
                domain: Some("example.org".into()),
            },
        ] {
            assert_eq!(Lane::parse(&lane.key()), lane);
        }
        assert_eq!(
            Lane {
                route: "mx".into(),
                domain: Some("a.example".into())
            }
            .key(),
            "mx a.example"
        );
    }
}
