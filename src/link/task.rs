//! The link task: everything the gates need that takes time or I/O. It probes routes not
//! known up every `probe_interval` (at once after a network change, a resume or a
//! flush), tells the queue owner when a gate opens (after clearing the resolver for MX),
//! sends ETRN when a link comes up, starts `every` runs, and follows the schedule's
//! windows. (The trigger file and SIGUSR1 are flushes: the daemon forwards them to the
//! queue owner.) Wall-clock jumps are watched against the monotonic clock: forward (or a
//! laptop resuming) probes at once; backward is news for the queue owner, which brings
//! retries pushed far into the future back in reach. Neither ages any mail: online time
//! is measured on the monotonic clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gate::Evidence;
use super::probe::probe;
use super::{Event, LinkMonitor, News};
use crate::clock::now_unix;
use crate::current::Current;
use crate::delivery::client::ClientSettings;
use crate::delivery::mx::MxResolver;
use crate::delivery::route::{Router, Target};

/// How often the wall clock is compared with the monotonic one (and, at the latest, the
/// schedule's windows looked at).
const CLOCK_TICK: Duration = Duration::from_secs(10);
/// A wall clock this far off the monotonic one has jumped (or the machine slept).
const JUMP: i64 = 5;

/// How the wall clock moved against the monotonic clock over one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jump {
    /// Ahead by this many seconds: set forward, or the machine slept.
    Ahead(i64),
    /// Behind by this many seconds: set back.
    Back(i64),
}

/// Compares `wall` seconds passed on the wall clock with `mono` on the monotonic one.
pub(crate) fn jump(wall: i64, mono: i64) -> Option<Jump> {
    if wall > mono + JUMP {
        Some(Jump::Ahead(wall - mono))
    } else if wall < mono - JUMP {
        Some(Jump::Back(mono - wall))
    } else {
        None
    }
}

/// What the link task reaches routes with; a reload replaces it.
pub struct Routing {
    pub router: Router,
    pub settings: HashMap<String, ClientSettings>,
    pub resolver: Arc<MxResolver>,
    /// Told each time a route's gate opens, or a flush names it (the ODMR station
    /// collects its mail then).
    pub on_open: Option<Arc<dyn OnOpen>>,
}

/// Something to do when a route's gate opens.
pub trait OnOpen: Send + Sync {
    fn opened(self: Arc<Self>, route: &str);
}

pub struct LinkTask {
    pub link: Arc<LinkMonitor>,
    pub routing: Arc<Current<Routing>>,
}

impl LinkTask {
    pub async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<Event>,
        shutdown: CancellationToken,
    ) {
        let link = self.link.clone();
        #[cfg(all(target_os = "linux", feature = "netlink"))]
        let mut netlink_rx = {
            let (tx, rx) = mpsc::unbounded_channel();
            if let Err(e) = super::netlink::watch(tx) {
                tracing::warn!(error = %e, "no netlink events; the probe interval alone notices network changes");
            }
            rx
        };
        #[cfg(not(all(target_os = "linux", feature = "netlink")))]
        let (_netlink_tx, mut netlink_rx) = mpsc::unbounded_channel::<()>();

        let mut probes: JoinSet<(String, Result<String, String>)> = JoinSet::new();
        let mut probing: HashSet<String> = HashSet::new();
        // Probe now: the routes not known up (`probe_now`), and with `probe_all` after a
        // network change, those known up too.
        let (mut probe_now, mut probe_all) = (true, false);
        // Not before this: a network change settles first.
        let mut settle = Instant::now();
        let mut next_tick = Instant::now() + CLOCK_TICK;
        let mut every = Every::default();
        every.sync(&link);
        let mut wall_mark = (now_unix(), Instant::now());
        loop {
            let boundary = self.next_boundary();
            let next_probe = if probe_now || probe_all {
                settle.max(Instant::now())
            } else {
                link.next_probe().unwrap_or(next_tick)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = events.recv() => match event {
                    Event::Opened { route } => self.opened(route),
                    Event::Up { route } => self.came_up(&route),
                    Event::Flushed { routes } => {
                        if let Some(hook) = &self.routing.get().on_open {
                            for route in &routes {
                                hook.clone().opened(route);
                            }
                        }
                    }
                    Event::ProbeNow { all } => {
                        probe_now = true;
                        probe_all |= all;
                    }
                    Event::Reconfigured => {
                        every.sync(&link);
                        probe_now = true;
                    }
                },
                Some(()) = netlink_rx.recv() => {
                    // Let the change settle (an address follows its link), then probe.
                    settle = Instant::now() + Duration::from_millis(200);
                    probe_all = true;
                }
                _ = tokio::time::sleep_until(next_probe) => {
                    let all = std::mem::take(&mut probe_all);
                    let now_all = std::mem::take(&mut probe_now);
                    for (route, target) in link.to_probe(all, now_all) {
                        if probing.insert(route.clone()) {
                            let resolver = self.routing.get().resolver.clone();
                            let timeout = link.probe_timeout(&route);
                            probes.spawn(async move {
                                let result = probe(&target, &resolver, timeout).await;
                                (route, result)
                            });
                        }
                    }
                }
                Some(Ok((route, result))) = probes.join_next() => {
                    probing.remove(&route);
                    match result {
                        Ok(how) => link.observe(&route, Evidence::Reached(how)),
                        Err(why) => {
                            tracing::debug!(route = %route, reason = %why, "probe failed");
                            link.observe(&route, Evidence::Unreachable(why));
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    wall_mark = self.watch_wall_clock(wall_mark);
                    next_tick = Instant::now() + CLOCK_TICK;
                }
                _ = tokio::time::sleep_until(boundary) => {
                    link.refresh_all();
                    // A window that opened lets its route be probed.
                    probe_now = true;
                }
                _ = sleep_until_opt(every.next()) => every.run_due(&link),
            }
        }
    }

    /// The next schedule window boundary of any route (or a clock tick from now, at the
    /// latest).
    fn next_boundary(&self) -> Instant {
        let link = &self.link;
        let fallback = Instant::now() + CLOCK_TICK;
        let t = link.local_now();
        let next = link
            .policies()
            .iter()
            .filter(|(_, p)| p.mode == crate::config::LinkMode::Schedule)
            .filter_map(|(_, p)| p.schedule.next_boundary(&t))
            .map(|b| b.timestamp().as_second())
            .min();
        match next {
            Some(at) => {
                let secs = (at - now_unix()).max(0) as u64;
                (Instant::now() + Duration::from_secs(secs) + Duration::from_millis(50))
                    .min(fallback)
            }
            None => fallback,
        }
    }

    fn opened(&self, route: String) {
        let routing = self.routing.get();
        if matches!(
            routing.router.by_name(&route).map(|r| &r.target),
            Some(Target::Mx { .. })
        ) {
            routing.resolver.refresh();
        }
        if let Some(hook) = &routing.on_open {
            hook.clone().opened(&route);
        }
        self.link.tell(News::Opened { route });
    }

    /// `route`'s link came up: ETRN over it what its policy names (a relay route's own
    /// `etrn`, or `link.etrn` for the smarthost), and nothing over any other route.
    fn came_up(&self, route: &str) {
        let domains = self.link.policy(route).map(|p| p.etrn).unwrap_or_default();
        if domains.is_empty() {
            return;
        }
        let routing = self.routing.get();
        let Some(Target::Relay { host_port, .. }) =
            routing.router.by_name(route).map(|r| &r.target)
        else {
            return;
        };
        let Some(settings) = routing.settings.get(route).cloned() else {
            return;
        };
        let host_port = host_port.clone();
        tokio::spawn(async move { super::etrn::request(&host_port, &settings, &domains).await });
    }

    /// Compares the wall clock's progress with the monotonic clock's since `mark`.
    fn watch_wall_clock(&self, mark: (i64, Instant)) -> (i64, Instant) {
        let wall = now_unix() - mark.0;
        let mono = mark.1.elapsed().as_secs() as i64;
        match jump(wall, mono) {
            Some(Jump::Ahead(ahead)) => {
                tracing::info!(
                    ahead,
                    "the wall clock jumped ahead, or the machine slept: probing"
                );
                self.link.hint("resume");
            }
            Some(Jump::Back(behind)) => {
                tracing::warn!(behind, "the wall clock went back");
                self.link.tell(News::ClockBack);
            }
            None => {}
        }
        (now_unix(), Instant::now())
    }
}

/// The routes' `every` runs: each route in schedule mode with `every` starts a run on
/// itself each period.
#[derive(Default)]
struct Every {
    /// Per route: its period and when its next run starts.
    due: HashMap<String, (Duration, Instant)>,
}

impl Every {
    /// Follows the routes' policies: a new or changed period starts counting now.
    fn sync(&mut self, link: &LinkMonitor) {
        let mut due = HashMap::new();
        for (route, policy) in link.policies() {
            if let Some(period) = policy.every() {
                let at = match self.due.get(&route) {
                    Some((p, at)) if *p == period => *at,
                    _ => Instant::now() + period,
                };
                due.insert(route, (period, at));
            }
        }
        self.due = due;
        self.publish(link);
    }

    fn next(&self) -> Option<Instant> {
        self.due.values().map(|(_, at)| *at).min()
    }

    /// Starts the runs that are due, each on its own route.
    fn run_due(&mut self, link: &LinkMonitor) {
        let now = Instant::now();
        for (route, (period, at)) in self.due.iter_mut() {
            if *at <= now {
                let why = format!("every {}", humantime::format_duration(*period));
                link.flush(Some(route), &why, None);
                *at = now + *period;
            }
        }
        self.publish(link);
    }

    /// Tells the link when each route's next run starts, for `status`.
    fn publish(&self, link: &LinkMonitor) {
        let now = (now_unix(), Instant::now());
        *link.next_every_at.lock().expect("not poisoned") = self
            .due
            .iter()
            .map(|(route, (_, at))| {
                let secs = at.saturating_duration_since(now.1).as_secs() as i64;
                (route.clone(), now.0 + secs)
            })
            .collect();
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_jumps_are_told_apart_from_drift() {
        // (wall seconds, monotonic seconds, what it was)
        let table = [
            (10, 10, None),
            (14, 10, None),
            (16, 10, Some(Jump::Ahead(6))),
            (3600, 10, Some(Jump::Ahead(3590))),
            (6, 10, None),
            (4, 10, Some(Jump::Back(6))),
            (-31_536_000, 10, Some(Jump::Back(31_536_010))),
        ];
        for (wall, mono, want) in table {
            assert_eq!(jump(wall, mono), want, "wall {wall} mono {mono}");
        }
    }
}
