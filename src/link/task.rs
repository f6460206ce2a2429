//! The link task: everything the gates need that takes time or I/O. It probes routes not
//! known up every `probe_interval` (at once after a network change, a resume or a
//! flush), releases the mail waiting for a gate the moment it opens and wakes the
//! scheduler, clears the resolver, sends ETRN when a link comes up, starts `every` runs,
//! follows the schedule's windows, and writes online time to the route clocks. (The
//! trigger file and SIGUSR1 are flushes: the daemon forwards them to `queue::flush`.) Wall-clock
//! jumps are watched against the monotonic clock: forward (or a laptop resuming) probes
//! at once; backward brings retries pushed far into the future back in reach. Neither
//! ages any mail: online time is measured on the monotonic clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gate::Evidence;
use super::probe::probe;
use super::{Event, Link};
use crate::delivery::client::ClientSettings;
use crate::delivery::mx::MxResolver;
use crate::delivery::route::{Router, Target};
use crate::spool::{Spool, now_unix};

/// How often online time is written to the route clocks.
const CLOCK_TICK: Duration = Duration::from_secs(60);
/// A wall clock this far off the monotonic one has jumped (or the machine slept).
const JUMP: i64 = 30;

pub struct LinkTask {
    pub link: Arc<Link>,
    pub spool: Spool,
    pub router: Router,
    pub settings: HashMap<String, ClientSettings>,
    pub resolver: Arc<MxResolver>,
    /// Domains to ETRN when a relay route's link comes up (`link.etrn`).
    pub etrn: Vec<String>,
    /// The latest a waiting recipient should be due (`retry.max`), for backward jumps.
    pub max_wait: Duration,
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
                    Event::Opened { route } => self.opened(&route).await,
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
                    self.save_clocks().await;
                    wall_mark = self.watch_wall_clock(wall_mark).await;
                    next_tick = Instant::now() + CLOCK_TICK;
                }
                _ = tokio::time::sleep_until(boundary) => link.refresh_all(),
                _ = sleep_until_opt(next_every) => {
                    let period = every.expect("set with next_every");
                    link.flush(None, &format!("every {}", humantime::format_duration(period)));
                    next_every = Some(Instant::now() + period);
                    set_every(next_every, every);
                }
            }
        }
        self.save_clocks().await;
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

    async fn opened(&self, route: &str) {
        match self.spool.release_link_wait(route).await {
            Ok(n) if n > 0 => {
                tracing::info!(route, released = n, "gate open: waiting mail is due now")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(route, error = %e, "releasing mail waiting for the link failed")
            }
        }
        if matches!(
            self.router.by_name(route).map(|r| &r.target),
            Some(Target::Mx { .. })
        ) {
            self.resolver.refresh();
        }
        self.spool.wake_handle().notify_one();
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

    /// Writes the online time accrued since the scheduler's last pass (which writes it
    /// too). With nothing waiting there is nobody to age, and the time is dropped: it
    /// must not age mail that arrives later.
    async fn save_clocks(&self) {
        let clocks = self.link.take_online_time(super::ONLINE_TIME_CAP);
        if clocks.is_empty() || !self.anything_waits().await {
            return;
        }
        if let Err(e) = self.spool.advance_clocks(clocks).await {
            tracing::error!(error = %e, "writing online time failed");
        }
    }

    async fn anything_waits(&self) -> bool {
        let index = self.spool.layout().index.clone();
        tokio::task::spawn_blocking(move || {
            crate::spool::index::open_reader(&index)
                .ok()
                .flatten()
                .and_then(|c| crate::spool::claims::next_due(&c).ok().flatten())
                .is_some()
        })
        .await
        .unwrap_or(true)
    }

    /// Compares the wall clock's progress with the monotonic clock's since `mark`.
    async fn watch_wall_clock(&self, mark: (i64, Instant)) -> (i64, Instant) {
        let wall = now_unix() - mark.0;
        let mono = mark.1.elapsed().as_secs() as i64;
        if wall > mono + JUMP {
            tracing::info!(
                ahead = wall - mono,
                "the wall clock jumped ahead, or the machine slept: probing"
            );
            self.link.hint("resume");
        } else if wall < mono - JUMP {
            let latest = now_unix() + self.max_wait.as_secs() as i64;
            match self.spool.clamp_due(latest).await {
                Ok(n) => tracing::warn!(
                    behind = mono - wall,
                    retries_brought_forward = n,
                    "the wall clock went back"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "the wall clock went back; rescheduling failed")
                }
            }
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
