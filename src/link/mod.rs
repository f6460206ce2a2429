//! The link gate and its triggers (README, "Intermittent links"). `LinkMonitor` holds one gate
//! per route and answers the queue owner's question "may this route deliver now, and which of its
//! mail?"; deliveries, probes, flushes, the trigger file, netlink hints and the schedule
//! feed it evidence. What the queue must act on (a gate opened, the wall clock went
//! back) goes out as `News`; the link knows nothing of the spool. Online time — what
//! expiry counts — accrues per route while its gate is open and the link up; offline
//! time is never counted. Observing is synchronous and cheap; effects that need I/O go
//! to the link task. What `status` shows of the gates is `report`.

pub mod etrn;
pub mod gate;
#[cfg(all(target_os = "linux", feature = "netlink"))]
pub mod netlink;
pub mod policy;
pub mod probe;
mod report;
pub mod schedule;
pub mod task;
pub mod trigger;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::ZonedDateTime as Zoned;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::now_unix;
use crate::config::LinkMode;
use crate::delivery::route::{Route, Router, Target};
use gate::{DomainScope, Evidence, Gate, LinkState};
use policy::LinkPolicy;
use probe::ProbeTarget;
pub use report::{FlushRecord, RouteStatus};

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
    /// A flush named these routes (an ODMR station collects its mail then too).
    Flushed { routes: Vec<String> },
    /// Probe now the routes not known up; with `all`, those known up too (a network
    /// change or a resume may have cut them).
    ProbeNow { all: bool },
    /// The routes or their policies changed (a reload): timers are set anew.
    Reconfigured,
}

struct Entry {
    gate: Gate,
    policy: LinkPolicy,
    probe: ProbeTarget,
    /// When a link not known up is probed next.
    next_probe: Instant,
    hold: bool,
    /// Its station collects it (`via = "odmr"`): no gate of ours matters.
    odmr: bool,
    /// Where it delivers, for `status`.
    target: String,
    open: bool,
    /// Since when online time has been accruing, if it is.
    ageing_since: Option<Instant>,
    /// Online time accrued but not yet written to the route's clock.
    unsaved: Duration,
}

/// What is known of every route's link, shared by the parts that watch it and the parts
/// that ask it: each route's gate, the online time it accrues, the last flush's result.
pub struct LinkMonitor {
    /// `[link].mode`, what routes without their own follow (for `status`).
    mode: Mutex<LinkMode>,
    pub(crate) tz: jiff::tz::TimeZone,
    entries: Mutex<HashMap<String, Entry>>,
    last_flush: Mutex<Option<FlushRecord>>,
    /// When each route's next `every` run starts (unix seconds), set by the link task.
    pub(crate) next_every_at: Mutex<HashMap<String, i64>>,
    events: mpsc::UnboundedSender<Event>,
    news: mpsc::UnboundedSender<News>,
}

/// The link's receivers: events for the link task, news for the queue owner.
pub struct Receivers {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub news: mpsc::UnboundedReceiver<News>,
}

impl LinkMonitor {
    /// A gate for every route of `router`, each following its route's link policy;
    /// `link` is `[link]`. The events go to `task::run`, the news to the queue owner.
    pub fn new(
        link: &crate::config::Link,
        router: &Router,
        tz: jiff::tz::TimeZone,
    ) -> (LinkMonitor, Receivers) {
        let now = now_unix();
        let entries = router
            .routes()
            .map(|r| (r.name.clone(), Entry::new(r, Gate::new(now))))
            .collect();
        let (events, rx) = mpsc::unbounded_channel();
        let (news, news_rx) = mpsc::unbounded_channel();
        let link = LinkMonitor {
            mode: Mutex::new(link.mode),
            tz,
            entries: Mutex::new(entries),
            last_flush: Mutex::new(None),
            next_every_at: Mutex::new(HashMap::new()),
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

    /// Takes new routes and policies (a reload): a route that keeps its name and target
    /// keeps its gate (state, run, online time); the others start unknown.
    pub(crate) fn reconfigure(&self, link: &crate::config::Link, router: &Router) {
        *self.mode.lock().expect("not poisoned") = link.mode;
        let now = now_unix();
        {
            let mut entries = self.entries.lock().expect("not poisoned");
            let mut old = std::mem::take(&mut *entries);
            for r in router.routes() {
                let mut fresh = Entry::new(r, Gate::new(now));
                if let Some(kept) = old.remove(&r.name).filter(|e| e.target == fresh.target) {
                    fresh.gate = kept.gate;
                    fresh.open = kept.open;
                    fresh.ageing_since = kept.ageing_since;
                    fresh.unsaved = kept.unsaved;
                }
                entries.insert(r.name.clone(), fresh);
            }
        }
        self.refresh_all();
        let _ = self.events.send(Event::Reconfigured);
    }

    /// `[link].mode`.
    pub fn mode(&self) -> LinkMode {
        *self.mode.lock().expect("not poisoned")
    }

    /// Tells the queue owner.
    pub fn tell(&self, news: News) {
        let _ = self.news.send(news);
    }

    /// The route's policy: how long one probe may take.
    pub(crate) fn probe_timeout(&self, route: &str) -> Duration {
        self.policy(route)
            .map_or(Duration::from_secs(10), |p| p.probe_timeout())
    }

    /// The route's probe interval (how soon a retry after a link failure makes sense).
    pub fn probe_interval(&self, route: &str) -> Duration {
        self.policy(route)
            .map_or(Duration::from_secs(30), |p| p.probe_interval)
    }

    /// `route`'s link policy.
    pub(crate) fn policy(&self, route: &str) -> Option<LinkPolicy> {
        let entries = self.entries.lock().expect("not poisoned");
        entries.get(route).map(|e| e.policy.clone())
    }

    /// Every route's link policy.
    pub fn policies(&self) -> Vec<(String, LinkPolicy)> {
        let entries = self.entries.lock().expect("not poisoned");
        entries
            .iter()
            .map(|(n, e)| (n.clone(), e.policy.clone()))
            .collect()
    }

    /// Local wall-clock time, for the schedules' windows.
    pub(crate) fn local_now(&self) -> Zoned {
        jiff::Timestamp::now().to_zoned_datetime(self.tz.clone())
    }

    /// Whether `route` may deliver now, and if not, why and until when.
    pub(crate) fn permit(&self, route: &str) -> Permit {
        let t = self.local_now();
        let entries = self.entries.lock().expect("not poisoned");
        let Some(e) = entries.get(route) else {
            return Permit::Open;
        };
        let window = e.policy.window_open(&t);
        if e.gate.is_open(e.policy.mode, window) {
            return match e.gate.run.as_ref().and_then(|r| r.domains.clone()) {
                Some(domains) if !e.policy.by_mode(window) => Permit::Only(domains),
                _ => Permit::Open,
            };
        }
        let (reason, until) = closed(e, &t);
        Permit::Closed { reason, until }
    }

    /// Why `route`'s mail outside a run waits, and until when at the latest.
    pub(crate) fn closed_reason(&self, route: &str) -> (String, i64) {
        let t = self.local_now();
        let entries = self.entries.lock().expect("not poisoned");
        match entries.get(route) {
            Some(e) => closed(e, &t),
            None => (String::new(), now_unix()),
        }
    }

    /// Feeds `evidence` about `route`'s link to its gate.
    pub(crate) fn observe(&self, route: &str, evidence: Evidence) {
        let now = now_unix();
        let t = self.local_now();
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
        self.refresh(route, e, &t);
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
        for name in &names {
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
            self.observe(name, evidence);
        }
        *self.last_flush.lock().expect("not poisoned") = Some(FlushRecord {
            at: now_unix(),
            why: why.to_owned(),
            result: "running".into(),
        });
        let _ = self.events.send(Event::ProbeNow { all: false });
        let _ = self.events.send(Event::Flushed { routes: names });
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
    pub(crate) fn end_run(&self, route: &str) {
        let t = self.local_now();
        let mut entries = self.entries.lock().expect("not poisoned");
        let Some(e) = entries.get_mut(route) else {
            return;
        };
        let Some(run) = e.gate.run.take() else {
            return;
        };
        tracing::info!(route, why = %run.why, "run finished: nothing more is due");
        self.refresh(route, e, &t);
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
    pub(crate) fn refresh_all(&self) {
        let t = self.local_now();
        let mut entries = self.entries.lock().expect("not poisoned");
        let names: Vec<String> = entries.keys().cloned().collect();
        for name in names {
            let e = entries.get_mut(&name).expect("listed");
            self.refresh(&name, e, &t);
        }
    }

    /// Keeps `open` and the online-time accrual in step with the gate; an opening is
    /// sent to the link task.
    fn refresh(&self, name: &str, e: &mut Entry, t: &Zoned) {
        let window = e.policy.window_open(t);
        let open = e.gate.is_open(e.policy.mode, window);
        if open && !e.open {
            let _ = self.events.send(Event::Opened {
                route: name.to_owned(),
            });
        }
        if !open && e.open {
            tracing::debug!(route = name, "gate closed");
        }
        e.open = open;
        let ageing = e.gate.is_ageing(e.policy.mode, window);
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
    pub(crate) fn take_online_time(&self, cap: Duration) -> Vec<(String, i64)> {
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

    /// Routes to probe now: not hold routes, allowed to deliver, not known up (with
    /// `all`, after a network change, up ones too: the change may have cut them), and
    /// due by their probe interval (with `now_all` or `all`, at once). Each is due again
    /// a probe interval later.
    pub(crate) fn to_probe(&self, all: bool, now_all: bool) -> Vec<(String, ProbeTarget)> {
        let t = self.local_now();
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("not poisoned");
        let mut out = Vec::new();
        for (name, e) in entries.iter_mut() {
            if e.hold || !(all || e.gate.state != LinkState::Up) || !e.may_probe(&t) {
                continue;
            }
            if all || now_all || e.next_probe <= now {
                e.next_probe = now + e.policy.probe_interval;
                out.push((name.clone(), e.probe.clone()));
            }
        }
        out
    }

    /// When the next probe is due, if any route will want one.
    pub(crate) fn next_probe(&self) -> Option<Instant> {
        let t = self.local_now();
        let entries = self.entries.lock().expect("not poisoned");
        entries
            .values()
            .filter(|e| !e.hold && e.gate.state != LinkState::Up && e.may_probe(&t))
            .map(|e| e.next_probe)
            .min()
    }

    /// The probe target of `route`.
    pub(crate) fn probe_target(&self, route: &str) -> Option<ProbeTarget> {
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
}

impl Entry {
    fn new(r: &Route, gate: Gate) -> Entry {
        let (probe, target) = match &r.target {
            Target::Relay { host_port, .. } => {
                (ProbeTarget::Tcp(host_port.clone()), host_port.clone())
            }
            Target::Mx { port: 25, .. } => (ProbeTarget::Dns, "mx".to_owned()),
            Target::Mx { port, .. } => (ProbeTarget::Dns, format!("mx:{port}")),
            // A hold route: never probed.
            Target::Odmr => (ProbeTarget::Dns, "odmr".to_owned()),
            Target::Bundle => (ProbeTarget::Dns, "bundle".to_owned()),
        };
        Entry {
            gate,
            policy: LinkPolicy::from_config(&r.link),
            probe,
            next_probe: Instant::now(),
            hold: r.hold,
            odmr: r.target == Target::Odmr,
            target: if r.hold {
                format!("{target} (hold)")
            } else {
                target
            },
            open: false,
            ageing_since: None,
            unsaved: Duration::ZERO,
        }
    }

    /// Whether its mode lets the link be probed now: always in auto mode, in a window or
    /// a run on a schedule, during a run in manual mode.
    fn may_probe(&self, t: &Zoned) -> bool {
        match self.policy.mode {
            LinkMode::Auto => true,
            LinkMode::Schedule => self.policy.window_open(t) || self.gate.run.is_some(),
            LinkMode::Manual => self.gate.run.is_some(),
        }
    }
}

/// Why `e`'s mail outside a run waits, and until when at the latest (`t`: local now).
fn closed(e: &Entry, t: &Zoned) -> (String, i64) {
    let now = now_unix();
    if e.gate.state == LinkState::Down {
        (
            format!("waiting for the link: {}", e.gate.reason),
            now + WAIT_CHECK,
        )
    } else if e.policy.mode == LinkMode::Schedule {
        let next = e
            .policy
            .schedule
            .next_boundary(t)
            .map_or(now + WAIT_CHECK, |b| b.timestamp().as_second());
        ("outside the delivery windows".to_owned(), next)
    } else {
        (
            "manual mode: waiting for a flush".to_owned(),
            now + WAIT_CHECK,
        )
    }
}

#[cfg(test)]
mod tests;
