//! Which due lanes start a runner now, and with what: the owner's pass over its wake
//! list. A lane whose route's gate is closed has its due mail set waiting for the link;
//! a hold route's mail for a domain not open is held; what may go is claimed and handed
//! to a new runner, within the connection limits. When a runner ends, its lane is looked
//! up again; when a route has nothing left to do, its run ends.

use super::jobs::Job;
use super::lane::{self, Lane, LaneReport};
use super::owner::{LANE_CLAIM, MAX_LANES, MAX_MX_LANES, Owner, RECHECK, State};
use super::placement;
use crate::delivery::route::{Route, Target};
use crate::link::Permit;
use crate::link::gate::covers;
use crate::spool::claims::Claim;
use crate::spool::{Spool, now_unix};

impl Owner {
    /// Starts runners for the lanes that are due and free, within the connection limits;
    /// ends the runs that have nothing more to do.
    pub(super) async fn pass(&self, st: &mut State) {
        let now = now_unix();
        for key in st.schedule.due(now) {
            let lane = Lane::parse(&key);
            if st.is_running(&lane) || st.busy_by_job(&key) {
                continue;
            }
            if lane.route == placement::LOCAL {
                self.hold_again(st, &key, crate::identity::local::KEPT)
                    .await;
                continue;
            }
            let Some(route) = self.kit.router.by_name(&lane.route).cloned() else {
                // Placed by a configuration that is gone; the next start places it anew.
                st.schedule.remove(&key);
                continue;
            };
            if route.target == Target::Odmr {
                self.hold_again(st, &key, placement::ODMR_HELD).await;
                continue;
            }
            if route.target == Target::Bundle {
                self.hold_again(st, &key, placement::BUNDLE_HELD).await;
                continue;
            }
            if !self.may_start(st, &lane) {
                continue;
            }
            let claims = self.admit(st, &lane, &route, LANE_CLAIM).await;
            if claims.is_empty() {
                self.refresh(st, &key).await;
                continue;
            }
            tracing::debug!(lane = %lane, recipients = claims.len(), "starting delivery");
            let handle = st.runners.spawn(lane::run(
                self.kit.clone(),
                self.handle.clone(),
                lane.clone(),
                claims,
            ));
            st.running.insert(handle.id(), lane);
        }
        self.end_drained_runs(st, now);
    }

    fn may_start(&self, st: &State, lane: &Lane) -> bool {
        let mx = st.running.values().filter(|l| l.is_mx()).count();
        st.running.len() < MAX_LANES && (!lane.is_mx() || mx < MAX_MX_LANES)
    }

    /// What of `lane`'s due mail may go now, claimed (at most `limit` recipients). What
    /// its gate keeps back is set waiting for the link, a hold route's mail for a domain
    /// not open is held: both as jobs.
    pub(super) async fn admit(
        &self,
        st: &mut State,
        lane: &Lane,
        route: &Route,
        limit: usize,
    ) -> Vec<Claim> {
        let key = lane.key();
        let spool = &self.kit.spool;
        let clocks = self.kit.link.take_online_time(crate::link::ONLINE_TIME_CAP);
        let only = match self.kit.link.permit(&route.name) {
            Permit::Closed { reason, .. } => {
                self.advance_clocks(clocks).await;
                self.queue_lane_job(
                    st,
                    Job::WaitForLink {
                        lane: key,
                        domain: None,
                        reason,
                    },
                );
                return Vec::new();
            }
            Permit::Open => None,
            Permit::Only(scope) => Some(scope),
        };
        if only.is_none() && !route.hold {
            return claim(spool, &key, None, limit, clocks).await;
        }
        let domains = match spool.due_domains(&key).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(lane = %lane, error = %e, "reading due domains failed");
                return Vec::new();
            }
        };
        let mut claims = Vec::new();
        let mut clocks = Some(clocks);
        for domain in domains {
            let in_scope = only.as_ref().is_none_or(|scope| covers(scope, &domain));
            if !in_scope {
                let (reason, _) = self.kit.link.closed_reason(&route.name);
                self.queue_lane_job(
                    st,
                    Job::WaitForLink {
                        lane: key.clone(),
                        domain: Some(domain),
                        reason,
                    },
                );
            } else if route.hold && !self.open_domains.is_open(&domain) {
                self.queue_lane_job(
                    st,
                    Job::HoldDue {
                        lane: key.clone(),
                        domain,
                        reason: placement::HELD.into(),
                    },
                );
            } else if claims.len() < limit {
                let more = claim(
                    spool,
                    &key,
                    Some(&domain),
                    limit - claims.len(),
                    clocks.take().unwrap_or_default(),
                )
                .await;
                claims.extend(more);
            }
        }
        claims
    }

    /// Mail no connection of ours can take (kept for a local name, or waiting for its
    /// ODMR station), made due by the operator or a flush: held again, with `reason`.
    async fn hold_again(&self, st: &mut State, key: &str, reason: &str) {
        match self.kit.spool.due_domains(key).await {
            Ok(domains) => {
                for domain in domains {
                    self.queue_lane_job(
                        st,
                        Job::HoldDue {
                            lane: key.to_owned(),
                            domain,
                            reason: reason.into(),
                        },
                    );
                }
            }
            Err(e) => tracing::error!(lane = key, error = %e, "reading due domains failed"),
        }
        st.schedule.remove(key);
    }

    fn queue_lane_job(&self, st: &mut State, job: Job) {
        let same = |j: &Job| match (j, &job) {
            (
                Job::WaitForLink {
                    lane: a, domain: x, ..
                },
                Job::WaitForLink {
                    lane: b, domain: y, ..
                },
            ) => a == b && x == y,
            (
                Job::HoldDue {
                    lane: a, domain: x, ..
                },
                Job::HoldDue {
                    lane: b, domain: y, ..
                },
            ) => a == b && x == y,
            _ => false,
        };
        if !st.jobs.iter().any(same) {
            st.jobs.push_back(job);
        }
    }

    /// Looks `lane` up in the index again: when its next mail is due, if any.
    pub(super) async fn refresh(&self, st: &mut State, key: &str) {
        match self.kit.spool.lane_next_due(key).await {
            Ok(Some(at)) => st.schedule.set(key, at),
            Ok(None) => st.schedule.remove(key),
            Err(e) => {
                tracing::error!(lane = key, error = %e, "reading the lane's next due time failed");
                st.schedule.set(key, now_unix() + RECHECK.as_secs() as i64);
            }
        }
    }

    pub(super) async fn lane_done(
        &self,
        st: &mut State,
        done: Result<(tokio::task::Id, LaneReport), tokio::task::JoinError>,
    ) {
        let (id, report) = match done {
            Ok((id, report)) => (id, Some(report)),
            Err(e) => (e.id(), None),
        };
        let Some(lane) = st.running.remove(&id) else {
            return;
        };
        let key = lane.key();
        match report {
            Some(r) => tracing::debug!(lane = %lane, delivered = r.delivered, "delivery finished"),
            None => {
                tracing::error!(lane = %lane, "a delivery task failed; its claims are due again")
            }
        }
        // Claims left unrecorded (a failed task, or a shutdown) are due again now.
        match self.kit.spool.release_claims(&key).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(lane = %lane, recipients = n, "unrecorded claims are due again")
            }
            Err(e) => tracing::error!(lane = %lane, error = %e, "releasing claims failed"),
        }
        self.refresh(st, &key).await;
    }

    /// Ends the runs whose routes have nothing more to do: no job left, no lane of
    /// theirs running or due. A run is ended only once its first release was done.
    fn end_drained_runs(&self, st: &mut State, now: i64) {
        if !st.jobs.is_empty() {
            return;
        }
        for route in self.kit.link.runs() {
            if !st.runs_seen.contains(&route) {
                continue;
            }
            let busy = st.running.values().any(|l| l.route == route)
                || st
                    .schedule
                    .due(now)
                    .iter()
                    .any(|k| Lane::parse(k).route == route);
            if !busy {
                st.runs_seen.remove(&route);
                self.kit.link.end_run(&route);
            }
        }
    }
}

async fn claim(
    spool: &Spool,
    lane: &str,
    domain: Option<&str>,
    limit: usize,
    clocks: Vec<(String, i64)>,
) -> Vec<Claim> {
    match spool.claim(lane, domain, limit, clocks).await {
        Ok(claims) => claims,
        Err(e) => {
            tracing::error!(lane, error = %e, "claiming due mail failed");
            Vec::new()
        }
    }
}
