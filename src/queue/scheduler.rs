//! The queue owner's wake loop (DESIGN §3 `queue/`): one task sleeps until the earliest
//! due recipient, a commit, a flush or a finished lane, then claims what is due for the
//! lanes that are free and starts a runner for each. The route is decided in the claim
//! itself: a hold route puts its mail `held` until a flush or ETRN names the domain; a
//! route whose link gate is closed leaves its mail waiting for the gate (`link_wait`,
//! released the moment it opens); a lane already running leaves its domains for that
//! runner to claim. Runs that flushes started end when their route has nothing due. At most one runner
//! per lane, `MAX_LANES` connections in all, `MAX_MX_LANES` of them to MX destinations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::lane::{Deliverer, LANE_CLAIM, LEASE, Lane, LaneReport};
use crate::link::Permit;
use crate::spool::claims::{Claim, Decide, Disposition, next_due};
use crate::spool::{index, now_unix};

/// Connections at once, over every route.
pub const MAX_LANES: usize = 10;
/// Connections at once to MX destinations (one per domain).
pub const MAX_MX_LANES: usize = 8;
/// The longest the loop sleeps without a reason to wake.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Commits come in bursts: passes they cause are this far apart at least.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(50);

pub struct Scheduler {
    pub deliverer: Arc<Deliverer>,
}

impl Scheduler {
    pub async fn run(self, shutdown: CancellationToken) {
        let spool = self.deliverer.spool.clone();
        let wake = spool.wake_handle();
        let mut running: JoinSet<LaneReport> = JoinSet::new();
        let mut lanes: HashMap<tokio::task::Id, Lane> = HashMap::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let last_pass = Instant::now();
            let busy: HashSet<Lane> = lanes.values().cloned().collect();
            let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
            let claimed = spool
                .claim(
                    now_unix(),
                    LEASE.as_secs() as i64,
                    LANE_CLAIM * MAX_LANES,
                    self.disposition(busy.clone(), seen.clone()),
                    self.deliverer
                        .link
                        .take_online_time(crate::link::ONLINE_TIME_CAP),
                )
                .await;
            {
                let seen = seen.lock().expect("not poisoned");
                self.deliverer.link.end_drained_runs(
                    &|route| busy.iter().any(|l| l.route == route),
                    &|route| seen.contains(route),
                    last_pass.into(),
                );
            }
            let claims = match claimed {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming due mail failed; retrying shortly");
                    Vec::new()
                }
            };
            if !claims.is_empty() {
                for (lane, claims) in self.by_lane(claims) {
                    tracing::debug!(lane = %lane, recipients = claims.len(), "starting delivery");
                    let handle = running.spawn(self.deliverer.clone().run(lane.clone(), claims));
                    lanes.insert(handle.id(), lane);
                }
                continue;
            }
            let sleep = self.until_next_due(!lanes.is_empty()).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {
                    let since = last_pass.elapsed();
                    if since < MIN_PASS_INTERVAL {
                        tokio::time::sleep(MIN_PASS_INTERVAL - since).await;
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
                Some(done) = running.join_next_with_id() => {
                    let (id, report) = match done {
                        Ok((id, report)) => (id, Some(report)),
                        Err(e) => (e.id(), None),
                    };
                    let lane = lanes.remove(&id);
                    match (lane, report) {
                        (Some(lane), Some(r)) => tracing::debug!(lane = %lane, delivered = r.delivered, "delivery finished"),
                        (lane, None) => tracing::error!(lane = ?lane, "a delivery task failed; its claims are retried when their lease ends"),
                        (None, Some(_)) => {}
                    }
                }
            }
        }
        // Runners see the shutdown and claim nothing more; the daemon bounds the wait.
        while running.join_next().await.is_some() {}
    }

    /// The claim-time routing decision: hold routes hold unless their domain is open;
    /// busy lanes are left to their runner; new lanes start while connections are free.
    fn disposition(&self, busy: HashSet<Lane>, seen: Arc<Mutex<HashSet<String>>>) -> Box<Decide> {
        let d = self.deliverer.clone();
        let mut chosen: HashSet<Lane> = HashSet::new();
        let mut mx = busy.iter().filter(|l| l.is_mx()).count();
        Box::new(move |domain: &str| {
            let route = d.router.route(domain);
            if route.hold && !d.open_domains.is_open(domain) {
                return Disposition::Hold {
                    route: route.name.clone(),
                    reply: "held until a flush or ETRN names its domain".into(),
                };
            }
            if let Permit::Closed { reason, until } = d.link.permit(&route.name) {
                return Disposition::Wait {
                    route: route.name.clone(),
                    reply: reason,
                    until,
                };
            }
            seen.lock()
                .expect("not poisoned")
                .insert(route.name.clone());
            let lane = Lane::of(route, domain);
            if busy.contains(&lane) {
                return Disposition::Skip;
            }
            if !chosen.contains(&lane) {
                if busy.len() + chosen.len() >= MAX_LANES || (lane.is_mx() && mx >= MAX_MX_LANES) {
                    return Disposition::Skip;
                }
                mx += usize::from(lane.is_mx());
                chosen.insert(lane);
            }
            Disposition::Deliver {
                route: route.name.clone(),
            }
        })
    }

    fn by_lane(&self, claims: Vec<Claim>) -> BTreeMap<Lane, Vec<Claim>> {
        let mut out: BTreeMap<Lane, Vec<Claim>> = BTreeMap::new();
        for c in claims {
            let lane = Lane::of(self.deliverer.router.route(&c.domain), &c.domain);
            out.entry(lane).or_default().push(c);
        }
        out
    }

    /// How long to sleep. Mail due but not claimed waits for a busy lane: its runner
    /// finishing wakes the loop.
    async fn until_next_due(&self, lanes_running: bool) -> Duration {
        let index_path = self.deliverer.spool.layout().index.clone();
        let next = tokio::task::spawn_blocking(move || {
            index::open_reader(&index_path)
                .ok()
                .flatten()
                .and_then(|c| next_due(&c).ok().flatten())
        })
        .await
        .ok()
        .flatten();
        let now = now_unix();
        match next {
            Some(at) if at > now => Duration::from_secs((at - now) as u64).min(MAX_SLEEP),
            Some(_) if lanes_running => MAX_SLEEP,
            Some(_) => Duration::from_millis(200),
            None => MAX_SLEEP,
        }
    }
}
