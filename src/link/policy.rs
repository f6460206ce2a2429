//! A route's link policy: when its gate may open (`mode`, the schedule's windows, runs
//! that `every` starts), how often its link is probed, and what it asks for by ETRN when
//! the link comes up. Built from the route's link settings: `[link]`, with the route's
//! own (`[route.link]`, `[upstream.link]`) over them.

use std::time::Duration;

use jiff::ZonedDateTime as Zoned;

use super::schedule::Schedule;
use crate::config::LinkMode;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPolicy {
    pub mode: LinkMode,
    pub schedule: Schedule,
    pub probe_interval: Duration,
    /// Domains to ETRN over the route when its link comes up.
    pub etrn: Vec<String>,
}

impl LinkPolicy {
    pub fn from_config(link: &crate::config::Link) -> LinkPolicy {
        LinkPolicy {
            mode: link.mode,
            schedule: Schedule::new(&link.windows, link.every.map(|e| e.0)),
            probe_interval: link.probe_interval.0,
            etrn: link.etrn.clone(),
        }
    }

    /// Whether a schedule window is open at `t` (only schedule mode has windows).
    pub(crate) fn window_open(&self, t: &Zoned) -> bool {
        self.mode == LinkMode::Schedule && self.schedule.open_at(t)
    }

    /// Whether the mode alone lets delivery run (`window`: inside a window), without a
    /// run that a flush or `every` started.
    pub(crate) fn by_mode(&self, window: bool) -> bool {
        match self.mode {
            LinkMode::Auto => true,
            LinkMode::Schedule => window,
            LinkMode::Manual => false,
        }
    }

    /// The period of `every` runs, in schedule mode.
    pub fn every(&self) -> Option<Duration> {
        self.schedule
            .every
            .filter(|_| self.mode == LinkMode::Schedule)
    }

    /// How long one probe may take: a probe interval, at most ten seconds.
    pub(crate) fn probe_timeout(&self) -> Duration {
        self.probe_interval.min(Duration::from_secs(10))
    }
}
