//! The link gate and its triggers (DESIGN §6). `Link` holds one gate per route and
//! answers the queue owner's question "may this route deliver now, and which of its
//! mail?"; deliveries, probes, flushes, the trigger file, netlink hints and the schedule
//! feed it evidence. What the queue must act on (a gate opened, the wall clock went
//! back) goes out as `News`; the link knows nothing of the spool. Online time — what
//! expiry counts — accrues per route while its gate is open and the link up; offline
//! time is never counted (DESIGN §1.4). Observing is synchronous and cheap; effects that
//! need I/O go to the link task.

pub mod etrn;
pub mod gate;
#[cfg(all(target_os = "linux", feature = "netlink"))]
pub mod netlink;
pub mod probe;
pub mod schedule;
pub mod task;
pub mod trigger;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;

use crate::clock::now_unix;
use crate::config::LinkMode;
use crate::delivery::route::{Router, Target};
use gate::{DomainScope, Evidence, Gate, LinkState};
use probe::ProbeTarget;
use schedule::Schedule;

/// The longest mail waits for a closed gate before it is looked at again (a safety net:
/// the gate opening releases it at once).
const WAIT_CHECK: i64 = 3600;

/// The most online time written to a route's clock at once: the link task writes at
/// least every minute, so more means the monotonic clock misbehaved; it ages nothing.
pub const ONLINE_TIME_CAP: Duration = Duration::from_secs(120);

/// Whether a route may deliver now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permit {
    Open,
    /// Only mail for these domains: a flush naming them opened a gate its mode keeps
    /// closed (manual mode, or outside the schedule's windows).
    Only(Vec<DomainScope>),
    /// Not now: why, and when to look again (unix seconds).
    Closed {
        reason: String,
        until: i64,
    },
}

/// A route's gate as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteStatus {
    pub route: String,
    /// Where it delivers: `host:port`, `mx`, or `mx:PORT`; `(hold)` for hold routes.
    pub target: String,
    pub state: LinkState,
    pub reason: String,
    /// Unix seconds of the last change.
    pub since: i64,
    /// Delivery may run now.
    pub open: bool,
    /// Why a run is going on, if one is.
    pub run: Option<String>,
}

/// The last flush, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlushRecord {
    pub at: i64,
    pub why: String,
    /// How the run ended: `drained`, or why it stopped.
    pub result: String,
}

/// What the queue owner is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum News {
    /// `route`'s gate opened: mail waiting for it may go (as far as its permit says).
    Opened { route: String },
    /// A run started on `route`, or a flush joined it: what it covers may go.
    Run { route: String },
    /// The wall clock went back: retries pushed far into the future must come back in
    /// reach.
    ClockBack,
}

/// What the link task is told.
#[derive(Debug)]
pub enum Event {
    /// `route`'s gate opened: refresh the resolver for MX, and tell the queue owner.
    Opened { route: String },
    /// `route`'s link came up: ETRN what `link.etrn` names.
    Up { route: String },
    /// Probe now the routes not known up; with `all`, those known up too (a network
    /// change or a resume may have cut them).
    ProbeNow { all: bool },
}

struct Entry {
    gate: Gate,
    probe: ProbeTarget,
    hold: bool,
    /// Where it delivers, for `status`.
    target: String,
    open: bool,
    /// Since when online time has been accruing, if it is.
    ageing_since: Option<Instant>,
    /// Online time accrued but not yet written to the route's clock.
    unsaved: Duration,
}

pub struct Link {
    pub mode: LinkMode,
    pub schedule: Schedule,
    pub probe_interval: Duration,
    pub(crate) tz: jiff::tz::TimeZone,
    entries: Mutex<HashMap<String, Entry>>,
    last_flush: Mutex<Option<FlushRecord>>,
    /// When the next `every` run starts (unix seconds), set by the link task.
    pub(crate) next_every_at: Mutex<Option<i64>>,
    events: mpsc::UnboundedSender<Event>,
    news: mpsc::UnboundedSender<News>,
}

/// The link's receivers: events for the link task, news for the queue owner.
pub struct Receivers {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub news: mpsc::UnboundedReceiver<News>,
}

impl Link {
    /// A gate for every route of `router`; the events go to `task::run`, the news to
    /// the queue owner.
    pub fn new(
        link: &crate::config::Link,
        router: &Router,
        tz: jiff::tz::TimeZone,
    ) -> (Link, Receivers) {
        let now = now_unix();
        let entries = router
            .routes()
            .map(|r| {
                let (probe, target) = match &r.target {
                    Target::Relay { host_port, .. } => {
                        (ProbeTarget::Tcp(host_port.clone()), host_port.clone())
                    }
                    Target::Mx { port: 25, .. } => (ProbeTarget::Dns, "mx".to_owned()),
                    Target::Mx { port, .. } => (ProbeTarget::Dns, format!("mx:{port}")),
                };
                let entry = Entry {
                    gate: Gate::new(now),
                    probe,
                    hold: r.hold,
                    target: if r.hold {
                        format!("{target} (hold)")
                    } else {
                        target
                    },
                    open: false,
                    ageing_since: None,
                    unsaved: Duration::ZERO,
                };
                (r.name.clone(), entry)
            })
            .collect();
        let (events, rx) = mpsc::unbounded_channel();
        let (news, news_rx) = mpsc::unbounded_channel();
        let link = Link {
            mode: link.mode,
            schedule: Schedule::new(&link.windows, link.every.map(|e| e.0)),
            probe_interval: link.probe_interval.0,
            tz,
            entries: Mutex::new(entries),
            last_flush: Mutex::new(None),
            next_every_at: Mutex::new(None),
            events,
            news,
        };
        link.refresh_all();
        (
            link,
            Receivers {
                events: rx,
                news: news_rx,
            },
        )
    }

    /// Tells the queue owner.
    pub fn tell(&self, news: News) {
        let _ = self.news.send(news);
    }

    /// How long one probe may take: a probe interval, at most ten seconds.
    pub fn probe_timeout(&self) -> Duration {
        self.probe_interval.min(Duration::from_secs(10))
    }

    fn window_open(&self) -> bool {
        self.schedule
            .open_at(&jiff::Timestamp::now().to_zoned_datetime(self.tz.clone()))
    }

    /// Whether `route` may deliver now, and if not, why and until when.
    pub fn permit(&self, route: &str) -> Permit {
        let window = self.window_open();
        let entries = self.entries.lock().expect("not poisoned");
        let Some(e) = entries.get(route) else {
            return Permit::Open;
        };
        if e.gate.is_open(self.mode, window) {
            let by_mode = match self.mode {
                LinkMode::Auto => true,
                LinkMode::Schedule => window,
                LinkMode::Manual => false,
            };
            return match e.gate.run.as_ref().and_then(|r| r.domains.clone()) {
                Some(domains) if !by_mode => Permit::Only(domains),
                _ => Permit::Open,
            };
        }
        let (reason, until) = self.closed(e);
        Permit::Closed { reason, until }
    }

    /// Why `route`'s mail outside a run waits, and until when at the latest.
    pub fn closed_reason(&self, route: &str) -> (String, i64) {
        let entries = self.entries.lock().expect("not poisoned");
        match entries.get(route) {
            Some(e) => self.closed(e),
            None => (String::new(), now_unix()),
        }
    }

    fn closed(&self, e: &Entry) -> (String, i64) {
        let now = now_unix();
        if e.gate.state == LinkState::Down {
            (
                format!("waiting for the link: {}", e.gate.reason),
                now + WAIT_CHECK,
            )
        } else if self.mode == LinkMode::Schedule {
            let t = jiff::Timestamp::now().to_zoned_datetime(self.tz.clone());
            let next = self
                .schedule
                .next_boundary(&t)
                .map_or(now + WAIT_CHECK, |b| b.timestamp().as_second());
            ("outside the delivery windows".to_owned(), next)
        } else {
            (
                "manual mode: waiting for a flush".to_owned(),
                now + WAIT_CHECK,
            )
        }
    }

    /// Feeds `evidence` about `route`'s link to its gate.
    pub fn observe(&self, route: &str, evidence: Evidence) {
        let now = now_unix();
        let window = self.window_open();
        let mut entries = self.entries.lock().expect("not poisoned");
        let Some(e) = entries.get_mut(route) else {
            return;
        };
        let change = e.gate.observe(evidence, now);
        if let Some(change) = change {
            tracing::info!(route, from = change.from.as_str(), to = change.to.as_str(), reason = %e.gate.reason, "link");
            if change.to == LinkState::Up {
                let _ = self.events.send(Event::Up {
                    route: route.to_owned(),
                });
            }
        }
        self.refresh(route, e, window);
    }

    /// A flush (or ETRN, the trigger file, `every`) for `route`, or every route: each
    /// starts a run, coalesced with one already going; with `domain`, the run covers
    /// that domain's mail only. Returns whether a run was already going.
    pub fn flush(&self, route: Option<&str>, why: &str, domain: Option<DomainScope>) -> bool {
        let names: Vec<String> = match route {
            Some(r) => vec![r.to_owned()],
            None => self
                .entries
                .lock()
                .expect("not poisoned")
                .iter()
                .filter(|(_, e)| !e.hold)
                .map(|(n, _)| n.clone())
                .collect(),
        };
        let running = {
            let entries = self.entries.lock().expect("not poisoned");
            names
                .iter()
                .any(|n| entries.get(n).is_some_and(|e| e.gate.run.is_some()))
        };
        for name in names {
            self.tell(News::Run {
                route: name.clone(),
            });
            let evidence = match &domain {
                None => Evidence::Flush(why.to_owned()),
                Some((d, subdomains)) => Evidence::FlushDomain {
                    why: why.to_owned(),
                    domain: d.clone(),
                    subdomains: *subdomains,
                },
            };
            self.observe(&name, evidence);
        }
        *self.last_flush.lock().expect("not poisoned") = Some(FlushRecord {
            at: now_unix(),
            why: why.to_owned(),
            result: "running".into(),
        });
        let _ = self.events.send(Event::ProbeNow { all: false });
        running
    }

    /// Routes with a run going.
    pub fn runs(&self) -> Vec<String> {
        self.entries
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, e)| e.gate.run.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Ends `route`'s run: nothing of it is due any more.
    pub fn end_run(&self, route: &str) {
        let window = self.window_open();
        let mut entries = self.entries.lock().expect("not poisoned");
        let Some(e) = entries.get_mut(route) else {
            return;
        };
        let Some(run) = e.gate.run.take() else {
            return;
        };
        tracing::info!(route, why = %run.why, "run finished: nothing more is due");
        self.refresh(route, e, window);
        let any_left = entries.values().any(|e| e.gate.run.is_some());
        drop(entries);
        if !any_left {
            let mut last = self.last_flush.lock().expect("not poisoned");
            if let Some(record) = last.as_mut().filter(|r| r.result == "running") {
                record.result = "drained".into();
            }
        }
    }

    /// Re-evaluates every gate (the schedule may have opened or closed one).
    pub fn refresh_all(&self) {
        let window = self.window_open();
        let mut entries = self.entries.lock().expect("not poisoned");
        let names: Vec<String> = entries.keys().cloned().collect();
        for name in names {
            let e = entries.get_mut(&name).expect("listed");
            self.refresh(&name, e, window);
        }
    }

    /// Keeps `open` and the online-time accrual in step with the gate; an opening is
    /// sent to the link task.
    fn refresh(&self, name: &str, e: &mut Entry, window: bool) {
        let open = e.gate.is_open(self.mode, window);
        if open && !e.open {
            let _ = self.events.send(Event::Opened {
                route: name.to_owned(),
            });
        }
        if !open && e.open {
            tracing::debug!(route = name, "gate closed");
        }
        e.open = open;
        let ageing = e.gate.is_ageing(self.mode, window);
        match (ageing, e.ageing_since) {
            (true, None) => e.ageing_since = Some(Instant::now()),
            (false, Some(since)) => {
                e.unsaved += since.elapsed();
                e.ageing_since = None;
            }
            _ => {}
        }
    }

    /// Online seconds accrued per route since the last call, for the route clocks. At
    /// most `cap` per call: a monotonic clock that jumps (it should not) ages nothing.
    pub fn take_online_time(&self, cap: Duration) -> Vec<(String, i64)> {
        let mut entries = self.entries.lock().expect("not poisoned");
        let mut out = Vec::new();
        for (name, e) in entries.iter_mut() {
            if let Some(since) = e.ageing_since {
                e.unsaved += since.elapsed();
                e.ageing_since = Some(Instant::now());
            }
            let total = e.unsaved.min(cap);
            let secs = total.as_secs();
            e.unsaved = total - Duration::from_secs(secs);
            if secs > 0 {
                out.push((name.clone(), secs as i64));
            }
        }
        out
    }

    /// Routes to probe now: not hold routes, allowed to deliver, and not known up
    /// (with `all`, after a network change, up ones too: the change may have cut them).
    pub fn to_probe(&self, all: bool) -> Vec<(String, ProbeTarget)> {
        let window = self.window_open();
        self.entries
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, e)| {
                !e.hold
                    && (all || e.gate.state != LinkState::Up)
                    && match self.mode {
                        LinkMode::Auto => true,
                        LinkMode::Schedule => window || e.gate.run.is_some(),
                        LinkMode::Manual => e.gate.run.is_some(),
                    }
            })
            .map(|(n, e)| (n.clone(), e.probe.clone()))
            .collect()
    }

    /// The probe target of `route`.
    pub fn probe_target(&self, route: &str) -> Option<ProbeTarget> {
        self.entries
            .lock()
            .expect("not poisoned")
            .get(route)
            .map(|e| e.probe.clone())
    }

    /// Asks the link task to probe now (a network change was seen).
    pub fn hint(&self, why: &str) {
        tracing::debug!(why, "network change: probing");
        let _ = self.events.send(Event::ProbeNow { all: true });
    }

    pub fn status(&self) -> Vec<RouteStatus> {
        let window = self.window_open();
        let mut out: Vec<RouteStatus> = self
            .entries
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(name, e)| RouteStatus {
                route: name.clone(),
                target: e.target.clone(),
                state: e.gate.state,
                reason: e.gate.reason.clone(),
                since: e.gate.since,
                open: e.gate.is_open(self.mode, window),
                run: e.gate.run.as_ref().map(|r| r.why.clone()),
            })
            .collect();
        out.sort_by(|a, b| a.route.cmp(&b.route));
        out
    }

    pub fn last_flush(&self) -> Option<FlushRecord> {
        self.last_flush.lock().expect("not poisoned").clone()
    }

    /// A run ended because the link failed.
    pub fn note_flush_failed(&self, why: &str) {
        let mut last = self.last_flush.lock().expect("not poisoned");
        if let Some(record) = last.as_mut().filter(|r| r.result == "running") {
            record.result = format!("stopped: {why}");
        }
    }

    /// When the schedule next starts delivery (unix seconds), in schedule mode.
    pub fn next_scheduled(&self) -> Option<i64> {
        if self.mode != LinkMode::Schedule {
            return None;
        }
        let every_due = *self.next_every_at.lock().expect("not poisoned");
        let t = jiff::Timestamp::now().to_zoned_datetime(self.tz.clone());
        let window = (!self.schedule.open_at(&t))
            .then(|| self.schedule.next_boundary(&t))
            .flatten()
            .map(|b| b.timestamp().as_second());
        match (window, every_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
