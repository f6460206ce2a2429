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
use super::{Event, Link, News};
use crate::clock::now_unix;
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
pub fn jump(wall: i64, mono: i64) -> Option<Jump> {
    if wall > mono + JUMP {
        Some(Jump::Ahead(wall - mono))
    } else if wall < mono - JUMP {
        Some(Jump::Back(mono - wall))
    } else {
        None
    }
}

pub struct LinkTask {
    pub link: Arc<Link>,
    pub router: Router,
    pub settings: HashMap<String, ClientSettings>,
    pub resolver: Arc<MxResolver>,
    /// Domains to ETRN when a relay route's link comes up (`link.etrn`).
    pub etrn: Vec<String>,
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
        let mut next_probe = Instant::now();
        // A network change probes even the routes known up.
        let mut probe_all = false;
        let mut next_tick = Instant::now() + CLOCK_TICK;
        let every = link
            .schedule
            .every
            .filter(|_| link.mode == crate::config::LinkMode::Schedule);
        let mut next_every = every.map(|e| Instant::now() + e);
        let set_every = |at: Option<Instant>, period: Option<Duration>| {
            *link.next_every_at.lock().expect("not poisoned") =
                at.and(period).map(|p| now_unix() + p.as_secs() as i64);
        };
        set_every(next_every, every);
        let mut wall_mark = (now_unix(), Instant::now());
        loop {
            let boundary = self.next_boundary();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = events.recv() => match event {
                    Event::Opened { route } => self.opened(route),
                    Event::Up { route } => self.came_up(&route),
                    Event::ProbeNow { all } => {
                        next_probe = Instant::now();
                        probe_all |= all;
                    }
                },
                Some(()) = netlink_rx.recv() => {
                    // Let the change settle (an address follows its link), then probe.
                    next_probe = Instant::now() + Duration::from_millis(200);
                    probe_all = true;
                }
                _ = tokio::time::sleep_until(next_probe) => {
                    for (route, target) in link.to_probe(std::mem::take(&mut probe_all)) {
                        if probing.insert(route.clone()) {
                            let resolver = self.resolver.clone();
                            let timeout = link.probe_timeout();
                            probes.spawn(async move {
                                let result = probe(&target, &resolver, timeout).await;
                                (route, result)
                            });
                        }
                    }
                    next_probe = Instant::now() + link.probe_interval;
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
                _ = tokio::time::sleep_until(boundary) => link.refresh_all(),
                _ = sleep_until_opt(next_every) => {
                    let period = every.expect("set with next_every");
                    link.flush(None, &format!("every {}", humantime::format_duration(period)), None);
                    next_every = Some(Instant::now() + period);
                    set_every(next_every, every);
                }
            }
        }
    }

    /// The next schedule window boundary (or a minute from now, at the latest).
    fn next_boundary(&self) -> Instant {
        let link = &self.link;
        let fallback = Instant::now() + CLOCK_TICK;
        if !link.schedule.has_windows() {
            return fallback;
        }
        let t = jiff::Timestamp::now().to_zoned_datetime(link.tz.clone());
        match link.schedule.next_boundary(&t) {
            Some(b) => {
                let secs = (b.timestamp().as_second() - now_unix()).max(0) as u64;
                (Instant::now() + Duration::from_secs(secs) + Duration::from_millis(50))
                    .min(fallback)
            }
            None => fallback,
        }
    }

    fn opened(&self, route: String) {
        if matches!(
            self.router.by_name(&route).map(|r| &r.target),
            Some(Target::Mx { .. })
        ) {
            self.resolver.refresh();
        }
        self.link.tell(News::Opened { route });
    }

    fn came_up(&self, route: &str) {
        if self.etrn.is_empty() {
            return;
        }
        let Some(Target::Relay { host_port, .. }) = self.router.by_name(route).map(|r| &r.target)
        else {
            return;
        };
        let Some(settings) = self.settings.get(route).cloned() else {
            return;
        };
        let (host_port, domains) = (host_port.clone(), self.etrn.clone());
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
