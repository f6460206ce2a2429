//! The queue owner: the one task that decides what happens to recipient state. Everything
//! else sends it events — flush requests, operator changes, a delivery's answers and its
//! asks for more, news from the link gates, lanes with new mail from the spool's
//! commits — and the owner turns each into spool operations (the spool's writer thread
//! executes them, grouped into few transactions). It keeps a wake list of lanes by due
//! time (`schedule`), starts at most one runner per lane, `MAX_LANES` connections in all
//! and `MAX_MX_LANES` of them to MX destinations, and runs changes of any size a bounded
//! step at a time between events (`jobs`), so a flush of a 100k backlog answers at once
//! and intake never waits behind it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::flush::{FlushTarget, Started};
use super::jobs::{Change, ChangeOutcome, Job, Reply};
use super::lane::{self, Kit, Lane, LaneReport};
use super::open_domains::OpenDomains;
use super::retry::RetryPolicy;
use super::schedule::Schedule;
use super::settle::{self, NoticeRequest, Policy, without_notice};
use crate::delivery::dsn::{Action, Line};
use crate::delivery::route::Route;
use crate::delivery::runner::Answered;
use crate::link::gate::covers;
use crate::link::{News, Permit};
use crate::spool::claims::Claim;
use crate::spool::{Damaged, Outcomes, Placement, Scope, Spool, SpoolError, Wait, now_unix};

/// Connections at once, over every route.
pub const MAX_LANES: usize = 10;
/// Connections at once to MX destinations (one per domain).
pub const MAX_MX_LANES: usize = 8;
/// Most recipients one claim hands a lane.
pub const LANE_CLAIM: usize = 2000;
/// The longest the owner sleeps without a reason to wake (online time is saved then).
const TICK: Duration = Duration::from_secs(60);
/// A lane found with mail but no connection free is looked at again this soon at the
/// latest (a runner finishing wakes the owner first).
const RECHECK: Duration = Duration::from_secs(5);

const HELD: &str = "held until a flush or ETRN names its domain";

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
    /// A runner's answers, to record; `reply` once they are durable.
    Answers {
        lane: String,
        answered: Answered,
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
    pub fn flush_soon(&self, target: FlushTarget, why: &str) {
        let _ = self.send(QueueEvent::Flush {
            target,
            why: why.to_owned(),
            reply: None,
        });
    }

    /// An operator's change; answers when it is done.
    pub async fn change(&self, change: Change) -> Result<ChangeOutcome, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(QueueEvent::Change { change, reply })?;
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

/// The owner's inputs besides its events.
pub struct Inputs {
    pub events: mpsc::UnboundedReceiver<QueueEvent>,
    /// Lanes with new due mail, from the spool's commits.
    pub due: mpsc::UnboundedReceiver<Vec<String>>,
    pub news: mpsc::UnboundedReceiver<News>,
}

pub struct Owner {
    pub kit: Arc<Kit>,
    pub handle: QueueHandle,
    pub retry: RetryPolicy,
    pub hostname: String,
    pub open_domains: Arc<OpenDomains>,
}

/// The owner's working state.
struct State {
    schedule: Schedule,
    /// Lanes with a runner, by task.
    running: HashMap<tokio::task::Id, Lane>,
    runners: JoinSet<LaneReport>,
    jobs: VecDeque<Job>,
    /// Routes whose run has been seen through its first release: it may end once drained.
    runs_seen: HashSet<String>,
}

impl State {
    fn is_running(&self, lane: &Lane) -> bool {
        self.running.values().any(|l| l == lane)
    }

    fn busy_by_job(&self, key: &str) -> bool {
        self.jobs.iter().any(|j| j.lane() == Some(key))
    }
}

impl Owner {
    /// How committed mail is placed: its route and lane, held for a hold route whose
    /// domain is not open, waiting for the link when its route's gate is closed.
    pub fn placement(&self) -> Arc<crate::spool::Place> {
        let kit = self.kit.clone();
        let open = self.open_domains.clone();
        Arc::new(move |domain: &str| place(&kit, &open, domain))
    }

    /// Runs until `shutdown`, then waits (bounded by the daemon) for its runners.
    pub async fn run(self, mut inputs: Inputs, shutdown: CancellationToken) {
        let spool = self.kit.spool.clone();
        let mut st = State {
            schedule: Schedule::default(),
            running: HashMap::new(),
            runners: JoinSet::new(),
            jobs: VecDeque::new(),
            runs_seen: HashSet::new(),
        };
        self.start(&mut st).await;
        let mut next_tick = tokio::time::Instant::now() + TICK;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // One step of the first job, then everything that arrived meanwhile.
            if let Some(mut job) = st.jobs.pop_front() {
                match job.step(&spool).await {
                    Ok(stepped) => {
                        for lane in &stepped.due_now {
                            st.schedule.bring_forward(lane, now_unix());
                        }
                        if stepped.done {
                            self.job_done(&mut st, job, Ok(())).await;
                        } else {
                            st.jobs.push_front(job);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a queue change failed");
                        self.job_done(&mut st, job, Err(e)).await;
                    }
                }
            }
            while let Ok(event) = inputs.events.try_recv() {
                self.handle(&mut st, event).await;
            }
            self.kit.progress.set_changes_pending(st.jobs.len());
            self.pass(&mut st).await;
            if !st.jobs.is_empty() {
                tokio::task::yield_now().await;
                continue;
            }
            let sleep = self.sleep_for(&st);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = inputs.events.recv() => self.handle(&mut st, event).await,
                Some(lanes) = inputs.due.recv() => {
                    let now = now_unix();
                    for lane in lanes {
                        st.schedule.bring_forward(&lane, now);
                    }
                }
                Some(news) = inputs.news.recv() => self.news(&mut st, news).await,
                Some(done) = st.runners.join_next_with_id() => self.lane_done(&mut st, done).await,
                _ = tokio::time::sleep_until(next_tick) => {
                    self.save_online_time().await;
                    next_tick = tokio::time::Instant::now() + TICK;
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        // Runners see the shutdown and ask for nothing more; what they answered meanwhile
        // is still recorded. The daemon bounds the wait.
        while !st.runners.is_empty() {
            tokio::select! {
                Some(done) = st.runners.join_next_with_id() => self.lane_done(&mut st, done).await,
                Some(event) = inputs.events.recv() => self.handle(&mut st, event).await,
            }
        }
        self.save_online_time().await;
    }

    /// At start: place what is not on the lanes the configuration gives, bring retries
    /// within `retry.max`, and learn which lanes have mail waiting for a time.
    async fn start(&self, st: &mut State) {
        let spool = &self.kit.spool;
        match spool.placed_domains().await {
            Ok(domains) => {
                let mut todo = VecDeque::new();
                for (domain, lane) in domains {
                    let placement = place_route(&self.kit, &domain);
                    if lane.as_deref() != Some(placement.lane.as_str()) {
                        todo.push_back((domain, placement));
                    }
                }
                if !todo.is_empty() {
                    tracing::info!(
                        domains = todo.len(),
                        "placing mail on the configured routes"
                    );
                    st.jobs.push_back(Job::Place { todo });
                }
            }
            Err(e) => tracing::error!(error = %e, "reading where mail is placed failed"),
        }
        st.jobs.push_back(Job::Clamp {
            latest: now_unix() + self.retry.max.as_secs() as i64,
        });
        match spool.due_lanes().await {
            Ok(lanes) => {
                for (lane, at) in lanes {
                    st.schedule.set(&lane, at);
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the due lanes failed"),
        }
    }

    async fn handle(&self, st: &mut State, event: QueueEvent) {
        match event {
            QueueEvent::Flush { target, why, reply } => self.flush(st, target, &why, reply).await,
            QueueEvent::Change { change, reply } => {
                match Job::change(&self.kit.spool, change, Reply::Change(reply)).await {
                    Ok(job) => st.jobs.push_back(job),
                    Err(e) => tracing::error!(error = %e, "a queue change could not start"),
                }
            }
            QueueEvent::More { lane, reply } => {
                let claims = if self.kit.shutdown.is_cancelled() {
                    Vec::new()
                } else {
                    let lane = Lane::parse(&lane);
                    match self.kit.router.by_name(&lane.route) {
                        Some(route) => self.admit(st, &lane, &route.clone(), LANE_CLAIM).await,
                        None => Vec::new(),
                    }
                };
                let _ = reply.send(claims);
            }
            QueueEvent::Answers {
                lane,
                answered,
                reply,
            } => self.answers(&Lane::parse(&lane), answered, reply),
        }
    }

    async fn news(&self, st: &mut State, news: News) {
        match news {
            News::Opened { route } => {
                let job = self.release_link_wait(route, false).await;
                st.jobs.push_back(job);
            }
            News::Run { route } => {
                let job = self.release_link_wait(route, true).await;
                st.jobs.push_back(job);
            }
            News::ClockBack => st.jobs.push_back(Job::Clamp {
                latest: now_unix() + self.retry.max.as_secs() as i64,
            }),
        }
    }

    /// Releases what waits for `route`'s link, as far as its permit lets it go.
    async fn release_link_wait(&self, route: String, run: bool) -> Job {
        let domains = match self.kit.link.permit(&route) {
            Permit::Open => None,
            Permit::Only(scope) => {
                let mut domains = VecDeque::new();
                for (domain, subdomains) in scope {
                    if subdomains {
                        domains.extend(self.domains_under(&domain).await);
                    } else {
                        domains.push_back(domain);
                    }
                }
                Some(domains)
            }
            Permit::Closed { .. } => Some(VecDeque::new()),
        };
        Job::ReleaseLinkWait {
            route,
            domains,
            run,
        }
    }

    /// Domains with pending mail at `domain` or under it.
    async fn domains_under(&self, domain: &str) -> Vec<String> {
        let layout = self.kit.spool.layout().clone();
        let wanted = domain.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            crate::spool::IndexReader::open(&layout)
                .ok()
                .flatten()
                .and_then(|r| r.domains_under(&wanted).ok())
        })
        .await
        .ok()
        .flatten();
        found.unwrap_or_else(|| vec![domain.to_owned()])
    }

    async fn flush(
        &self,
        st: &mut State,
        target: FlushTarget,
        why: &str,
        reply: Option<oneshot::Sender<Result<Started, SpoolError>>>,
    ) {
        let mut domains = Vec::new();
        let (coalesced, changes) = match &target {
            FlushTarget::All => (
                self.kit.link.flush(None, why, None),
                vec![Change::Retry(Scope::All)],
            ),
            FlushTarget::Domain { domain, subdomains } => {
                let route = self.kit.router.route(domain);
                if route.hold {
                    self.open_domains.open(domain, *subdomains);
                }
                let coalesced = self.kit.link.flush(
                    Some(&route.name),
                    why,
                    Some((domain.clone(), *subdomains)),
                );
                domains = if *subdomains {
                    self.domains_under(domain).await
                } else {
                    vec![domain.clone()]
                };
                let mut changes = Vec::new();
                for d in domains.clone() {
                    changes.push(Change::Release(Scope::Domain(d.clone())));
                    changes.push(Change::Retry(Scope::Domain(d)));
                }
                (coalesced, changes)
            }
        };
        tracing::info!(why, target = ?target, coalesced, "flush");
        // What waits for the gates the flush opened is released first, then what it
        // names is made due; both go a step at a time after the answer.
        let routes: Vec<String> = match &target {
            FlushTarget::All => self
                .kit
                .router
                .routes()
                .filter(|r| !r.hold)
                .map(|r| r.name.clone())
                .collect(),
            FlushTarget::Domain { domain, .. } => vec![self.kit.router.route(domain).name.clone()],
        };
        for route in routes {
            let job = self.release_link_wait(route, true).await;
            st.jobs.push_back(job);
        }
        let released = match &target {
            FlushTarget::All => 0,
            FlushTarget::Domain { .. } => self.pending_in(&domains).await,
        };
        st.jobs.push_back(Job::Changes {
            todo: changes.into(),
            outcome: ChangeOutcome::default(),
            seen: HashSet::new(),
            reply: Reply::None,
        });
        self.kit.progress.set_changes_pending(st.jobs.len());
        if let Some(reply) = reply {
            let _ = reply.send(Ok(Started {
                released,
                coalesced,
            }));
        }
    }

    /// Recipients waiting in `domains` (for a flush's answer).
    async fn pending_in(&self, domains: &[String]) -> usize {
        let layout = self.kit.spool.layout().clone();
        let domains = domains.to_vec();
        tokio::task::spawn_blocking(move || {
            crate::spool::IndexReader::open(&layout)
                .ok()
                .flatten()
                .and_then(|r| r.waiting_in(&domains).ok())
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0)
    }

    async fn job_done(&self, st: &mut State, job: Job, result: Result<(), SpoolError>) {
        if let Some(route) = job.run_route() {
            st.runs_seen.insert(route.to_owned());
        }
        if let Some(lane) = job.lane() {
            let lane = lane.to_owned();
            self.refresh(st, &lane).await;
        }
        job.finish(result);
    }

    /// Starts runners for the lanes that are due and free, within the connection limits;
    /// ends the runs that have nothing more to do.
    async fn pass(&self, st: &mut State) {
        let now = now_unix();
        for key in st.schedule.due(now) {
            let lane = Lane::parse(&key);
            if st.is_running(&lane) || st.busy_by_job(&key) {
                continue;
            }
            let Some(route) = self.kit.router.by_name(&lane.route).cloned() else {
                // Placed by a configuration that is gone; the next start places it anew.
                st.schedule.remove(&key);
                continue;
            };
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
    async fn admit(&self, st: &mut State, lane: &Lane, route: &Route, limit: usize) -> Vec<Claim> {
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
                        reason: HELD.into(),
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
    async fn refresh(&self, st: &mut State, key: &str) {
        match self.kit.spool.lane_next_due(key).await {
            Ok(Some(at)) => st.schedule.set(key, at),
            Ok(None) => st.schedule.remove(key),
            Err(e) => {
                tracing::error!(lane = key, error = %e, "reading the lane's next due time failed");
                st.schedule.set(key, now_unix() + RECHECK.as_secs() as i64);
            }
        }
    }

    async fn lane_done(
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

    fn sleep_for(&self, st: &State) -> Duration {
        let now = now_unix();
        match st.schedule.next() {
            // Due but not started (no connection free): a runner ending wakes us.
            Some(at) if at <= now => RECHECK,
            Some(at) => Duration::from_secs((at - now) as u64).min(TICK),
            None => TICK,
        }
    }

    async fn save_online_time(&self) {
        let clocks = self.kit.link.take_online_time(crate::link::ONLINE_TIME_CAP);
        self.advance_clocks(clocks).await;
    }

    /// Writes online time to the route clocks. With nothing waiting there is nobody to
    /// age, and the time is dropped: it must not age mail that arrives later.
    async fn advance_clocks(&self, clocks: Vec<(String, i64)>) {
        if clocks.is_empty() {
            return;
        }
        let spool = &self.kit.spool;
        if !spool.anything_pending().await.unwrap_or(true) {
            return;
        }
        if let Err(e) = spool.advance_clocks(clocks).await {
            tracing::error!(error = %e, "writing online time failed");
        }
    }

    /// Decides what a delivery's answers mean and records them, with their notices, off
    /// the owner's loop; `reply` once they are durable.
    fn answers(&self, lane: &Lane, answered: Answered, reply: oneshot::Sender<()>) {
        let policy = Policy {
            retry: &self.retry,
            soon: self.kit.link.probe_interval,
        };
        let relayed: HashSet<(crate::spool::QueueId, usize)> =
            answered.relayed.iter().copied().collect();
        let now = now_unix();
        let settled = settle::settle(
            &policy,
            answered.results,
            answered.host.as_deref(),
            &|c| relayed.contains(&(c.message_id, c.position)),
            now,
            settle::jitter(),
        );
        for (counted, n) in &settled.tally {
            self.kit.metrics.count(&lane.route, *counted, *n);
        }
        let spool = self.kit.spool.clone();
        let hostname = self.hostname.clone();
        let retry_at = now + self.retry.initial.as_secs() as i64;
        let damaged = answered.damaged;
        tokio::spawn(async move {
            let mut records = settled.records;
            let mut notices = Vec::new();
            if !settled.notices.is_empty() {
                let (built, failed) =
                    build_notices(&spool, &hostname, settled.notices, false).await;
                notices = built;
                for request in failed {
                    without_notice(&mut records, &request, retry_at);
                }
            }
            let mut quarantine = Vec::new();
            for (id, reason) in damaged {
                let positions = spool.pending_positions(id).await.unwrap_or_default();
                let request = NoticeRequest {
                    id,
                    lines: positions
                        .iter()
                        .map(|p| Line {
                            position: *p,
                            action: Action::Failed,
                            status: "5.3.0".into(),
                            remote_mta: None,
                            diagnostic: format!("the message file is damaged: {reason}"),
                        })
                        .collect(),
                    records: Vec::new(),
                };
                tracing::error!(id = %id, reason = %reason, "message file damaged: its recipients bounce");
                let (built, _) = build_notices(&spool, &hostname, vec![request], true).await;
                notices.extend(built);
                quarantine.push(Damaged {
                    id,
                    reason,
                    positions,
                });
            }
            let logs: Vec<_> = notices
                .iter()
                .map(|b: &super::notices::Built| (b.about, b.sealed.id(), b.to.clone(), b.kind))
                .collect();
            let outcomes = Outcomes {
                records,
                notices: notices.into_iter().map(|b| b.sealed).collect(),
                damaged: quarantine,
            };
            match spool.record(outcomes).await {
                Ok(()) => {
                    for (id, dsn, to, kind) in logs {
                        tracing::info!(id = %id, dsn = %dsn, to = %to, kind, "DSN queued");
                    }
                    let _ = reply.send(());
                }
                Err(e) => {
                    tracing::error!(error = %e, "recording outcomes failed; the claims are retried")
                }
            }
        });
    }
}

/// Builds notices on a blocking thread; returns those built and the requests that could
/// not be (their records must wait).
async fn build_notices(
    spool: &Spool,
    hostname: &str,
    requests: Vec<NoticeRequest>,
    damaged: bool,
) -> (Vec<super::notices::Built>, Vec<NoticeRequest>) {
    let spool = spool.clone();
    let hostname = hostname.to_owned();
    let kept = requests.clone();
    tokio::task::spawn_blocking(move || {
        let (mut built, mut failed) = (Vec::new(), Vec::new());
        for request in requests {
            match super::notices::build(&spool, &hostname, &request, damaged) {
                Ok(Some(notice)) => built.push(notice),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(id = %request.id, error = %e, "DSN could not be written");
                    failed.push(request);
                }
            }
        }
        (built, failed)
    })
    .await
    .unwrap_or((Vec::new(), kept))
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

/// The route and lane of `domain`'s mail.
fn place_route(kit: &Kit, domain: &str) -> Placement {
    let route = kit.router.route(domain);
    Placement {
        route: route.name.clone(),
        lane: Lane::of(route, domain).key(),
        wait: None,
    }
}

/// `place_route`, and whether new mail waits: held for a hold route whose domain is not
/// open, waiting for the link when the route's gate keeps it back.
fn place(kit: &Kit, open: &OpenDomains, domain: &str) -> Placement {
    let mut placement = place_route(kit, domain);
    let route = kit.router.route(domain);
    placement.wait = if route.hold && !open.is_open(domain) {
        Some(Wait::Held(HELD.into()))
    } else {
        match kit.link.permit(&route.name) {
            Permit::Open => None,
            Permit::Closed { reason, .. } => Some(Wait::Link(reason)),
            Permit::Only(scope) => {
                (!covers(&scope, domain)).then(|| Wait::Link(kit.link.closed_reason(&route.name).0))
            }
        }
    };
    placement
}
