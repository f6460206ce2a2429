//! The gates as `status` shows them: each route's state, mode and why, whether it may
//! deliver and when it is probed next; the last flush; when a schedule next starts
//! delivery. Read under the link's locks, computed at the moment of asking.

use tokio::time::Instant;

use super::LinkMonitor;
use super::gate::LinkState;
use crate::clock::now_unix;
use crate::config::LinkMode;

/// A route's gate as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteStatus {
    pub route: String,
    /// Where it delivers: `host:port`, `mx`, or `mx:PORT`; `(hold)` for hold routes.
    pub target: String,
    /// The route's link mode (`[link]`, or its own).
    #[serde(default)]
    pub mode: LinkMode,
    pub state: LinkState,
    pub reason: String,
    /// Unix seconds of the last change.
    pub since: i64,
    /// Delivery may run now.
    pub open: bool,
    /// Why a run is going on, if one is.
    pub run: Option<String>,
    /// When its link is probed next (unix seconds), while it is not known up.
    #[serde(default)]
    pub next_probe_at: Option<i64>,
    /// Its mail waits for its station to collect it over ODMR (RFC 2645).
    #[serde(default)]
    pub odmr: bool,
}

/// The last flush, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlushRecord {
    pub at: i64,
    pub why: String,
    /// How the run ended: `drained`, or why it stopped.
    pub result: String,
}

impl LinkMonitor {
    pub fn status(&self) -> Vec<RouteStatus> {
        let t = self.local_now();
        let (now, wall) = (Instant::now(), now_unix());
        let mut out: Vec<RouteStatus> = self
            .entries
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(name, e)| RouteStatus {
                route: name.clone(),
                target: e.target.clone(),
                mode: e.policy.mode,
                state: e.gate.state,
                reason: e.gate.reason.clone(),
                since: e.gate.since,
                open: e.gate.is_open(e.policy.mode, e.policy.window_open(&t)),
                run: e.gate.run.as_ref().map(|r| r.why.clone()),
                next_probe_at: (!e.hold && e.gate.state != LinkState::Up && e.may_probe(&t))
                    .then(|| wall + e.next_probe.saturating_duration_since(now).as_secs() as i64),
                odmr: e.odmr,
            })
            .collect();
        out.sort_by(|a, b| a.route.cmp(&b.route));
        out
    }

    pub fn last_flush(&self) -> Option<FlushRecord> {
        self.last_flush.lock().expect("not poisoned").clone()
    }

    /// A run ended because the link failed.
    pub(crate) fn note_flush_failed(&self, why: &str) {
        let mut last = self.last_flush.lock().expect("not poisoned");
        if let Some(record) = last.as_mut().filter(|r| r.result == "running") {
            record.result = format!("stopped: {why}");
        }
    }

    /// When a schedule next starts delivery on some route (unix seconds): a window
    /// opening, or an `every` run.
    pub(crate) fn next_scheduled(&self) -> Option<i64> {
        let t = self.local_now();
        let every = self.next_every_at.lock().expect("not poisoned").clone();
        let entries = self.entries.lock().expect("not poisoned");
        entries
            .iter()
            .filter(|(_, e)| e.policy.mode == LinkMode::Schedule)
            .flat_map(|(name, e)| {
                let window = (!e.policy.schedule.open_at(&t))
                    .then(|| e.policy.schedule.next_boundary(&t))
                    .flatten()
                    .map(|b| b.timestamp().as_second());
                [window, every.get(name).copied()]
            })
            .flatten()
            .min()
    }
}
