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

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::handle::{QueueEvent, QueueHandle};
use super::jobs::{Job, Reply};
use super::kit::Kit;
use super::lane::{Lane, LaneReport};
use super::notices::NoticeSettings;
use super::open_domains::OpenDomains;
use super::placement;
use super::record::record;
use super::retry::RetryPolicy;
use super::schedule::Schedule;
use crate::link::News;
use crate::spool::{SpoolError, now_unix};

/// Connections at once, over every route.
pub const MAX_LANES: usize = 10;
/// Connections at once to MX destinations (one per domain).
pub const MAX_MX_LANES: usize = 8;
/// Most recipients one claim hands a lane.
pub const LANE_CLAIM: usize = 2000;
/// Messages claimed at a time for an ODMR turn.
const TURN_CLAIM: usize = 200;
/// The longest the owner sleeps without a reason to wake (online time is saved then).
const TICK: Duration = Duration::from_secs(60);
/// A lane found with mail but no connection free is looked at again this soon at the
/// latest (a runner finishing wakes the owner first).
pub(super) const RECHECK: Duration = Duration::from_secs(5);

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
    pub notices: Arc<NoticeSettings>,
    pub open_domains: Arc<OpenDomains>,
    /// Where the spool's writer reports lanes with new due mail (`Inputs::due`).
    pub due: mpsc::UnboundedSender<Vec<String>>,
}

/// The owner's working state.
pub(super) struct State {
    pub(super) schedule: Schedule,
    /// Lanes with a runner, by task.
    pub(super) running: HashMap<tokio::task::Id, Lane>,
    pub(super) runners: JoinSet<LaneReport>,
    pub(super) jobs: VecDeque<Job>,
    /// Routes whose run has been seen through its first release: it may end once drained.
    pub(super) runs_seen: HashSet<String>,
}

impl State {
    pub(super) fn is_running(&self, lane: &Lane) -> bool {
        self.running.values().any(|l| l == lane)
    }

    pub(super) fn busy_by_job(&self, key: &str) -> bool {
        self.jobs.iter().any(|j| j.lane() == Some(key))
    }
}

impl Owner {
    /// How committed mail is placed: its route and lane, held for a hold route whose
    /// domain is not open, waiting for the link when its route's gate is closed.
    pub(crate) fn placement(&self) -> Arc<crate::spool::Place> {
        let kit = self.kit.clone();
        let open = self.open_domains.clone();
        Arc::new(move |domain: &str| placement::place(&kit, &open, domain))
    }

    /// Runs until `shutdown`, then waits (bounded by the daemon) for its runners.
    pub async fn run(mut self, mut inputs: Inputs, shutdown: CancellationToken) {
        let spool = self.kit.spool.clone();
        if let Err(e) = spool.set_placement(self.placement(), self.due.clone()) {
            tracing::error!(error = %e, "committed mail cannot be placed: the spool's writer is gone");
            return;
        }
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
            self.take_waiting(&mut st, &mut inputs).await;
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
                    self.release_overdue_bundles(&mut st).await;
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

    /// Everything that arrived while a job step ran, without waiting for more.
    async fn take_waiting(&mut self, st: &mut State, inputs: &mut Inputs) {
        while let Ok(event) = inputs.events.try_recv() {
            self.handle(st, event).await;
        }
        while let Ok(lanes) = inputs.due.try_recv() {
            let now = now_unix();
            for lane in lanes {
                st.schedule.bring_forward(&lane, now);
            }
        }
        while let Ok(news) = inputs.news.try_recv() {
            self.news(st, news).await;
        }
        while let Some(done) = st.runners.try_join_next_with_id() {
            self.lane_done(st, done).await;
        }
    }

    /// At start: place what is not on the lanes the configuration gives, bring retries
    /// within `retry.max`, and learn which lanes have mail waiting for a time.
    async fn start(&self, st: &mut State) {
        let spool = &self.kit.spool;
        self.place_anew(st).await;
        st.jobs.push_back(Job::Clamp {
            latest: now_unix() + self.retry.max.as_secs() as i64,
        });
        self.release_overdue_bundles(st).await;
        match spool.due_lanes().await {
            Ok(lanes) => {
                for (lane, at) in lanes {
                    st.schedule.set(&lane, at);
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the due lanes failed"),
        }
    }

    async fn handle(&mut self, st: &mut State, event: QueueEvent) {
        match event {
            QueueEvent::Reconfigure { settings, reply } => {
                self.reconfigure(st, *settings).await;
                let _ = reply.send(());
            }
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
            QueueEvent::Turn {
                lane,
                domain,
                reply,
            } => {
                let claims = if self.kit.shutdown.is_cancelled() {
                    Vec::new()
                } else {
                    match self.kit.spool.claim_turn(&lane, &domain, TURN_CLAIM).await {
                        Ok(claims) => claims,
                        Err(e) => {
                            tracing::error!(lane, domain, error = %e, "claiming for an ODMR turn failed");
                            Vec::new()
                        }
                    }
                };
                let _ = reply.send(claims);
            }
            QueueEvent::BundleClaim {
                route,
                limit,
                reply,
            } => {
                let _ = reply.send(self.kit.spool.claim_for_bundle(&route, limit).await);
            }
            QueueEvent::Bundled {
                recipients,
                bundle,
                until,
                reply,
            } => {
                let _ = reply.send(self.kit.spool.mark_bundled(recipients, bundle, until).await);
            }
            QueueEvent::ClaimNamed { recipients, reply } => {
                let _ = reply.send(self.kit.spool.claim_named(recipients).await);
            }
            QueueEvent::Answers {
                lane,
                answered,
                reply,
            } => record(
                &self.kit,
                &self.retry,
                &self.notices,
                &Lane::parse(&lane),
                answered,
                reply,
            ),
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

    fn sleep_for(&self, st: &State) -> Duration {
        let now = now_unix();
        match st.schedule.next() {
            // Due but not started (no connection free): a runner ending wakes us.
            Some(at) if at <= now => RECHECK,
            Some(at) => Duration::from_secs((at - now) as u64).min(TICK),
            None => TICK,
        }
    }

    /// Bundled mail whose receipt is overdue goes back to the queue, to go again.
    async fn release_overdue_bundles(&self, st: &mut State) {
        match self.kit.spool.release_bundled(LANE_CLAIM).await {
            Ok(lanes) => {
                let now = now_unix();
                for lane in lanes {
                    tracing::info!(lane, "no receipt in time for bundled mail: it goes again");
                    st.schedule.bring_forward(&lane, now);
                }
            }
            Err(e) => tracing::error!(error = %e, "releasing bundled mail failed"),
        }
    }

    async fn save_online_time(&self) {
        let clocks = self.kit.link.take_online_time(crate::link::ONLINE_TIME_CAP);
        self.advance_clocks(clocks).await;
    }

    /// Writes online time to the route clocks. With nothing waiting there is nobody to
    /// age, and the time is dropped: it must not age mail that arrives later.
    pub(super) async fn advance_clocks(&self, clocks: Vec<(String, i64)>) {
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
}
