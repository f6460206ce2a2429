//! A route's link gate (README, "Intermittent links"): what we know of the link (`up`, `down`, `unknown`,
//! with the reason and time of the last change) and whether delivery may run now, which
//! also depends on `link.mode`. Pure: evidence in, a change out, tested as a table.
//! Going down takes one connection-level failure; coming back takes a probe or a
//! connection that reaches the upstream, so a flapping link is followed at the probe
//! interval, never faster. An operator's flush or the trigger file says "try now": the
//! state becomes `unknown`, which lets delivery run, and a run starts.

use crate::config::LinkMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Unknown,
    Up,
    Down,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Unknown => "unknown",
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// What was seen of the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A probe or a delivery reached the upstream.
    Reached(String),
    /// A probe or a connection could not reach it (refused, unreachable, timed out).
    Unreachable(String),
    /// Someone asked to try now (a flush, the trigger file, ETRN, `every`): the state is
    /// no longer known to be down, and a run starts.
    Flush(String),
    /// As `Flush`, for one domain's mail only (`flush --domain`, ETRN): the run it
    /// starts covers that domain (and those under it, when `subdomains`).
    FlushDomain {
        why: String,
        domain: String,
        subdomains: bool,
    },
}

/// A domain a run covers, with or without the domains under it.
pub type DomainScope = (String, bool);

/// Whether `scope` covers mail for `domain`.
pub(crate) fn covers(scope: &[DomainScope], domain: &str) -> bool {
    scope.iter().any(|(d, subdomains)| {
        domain == d
            || (*subdomains
                && domain.len() > d.len()
                && domain.ends_with(d.as_str())
                && domain.as_bytes()[domain.len() - d.len() - 1] == b'.')
    })
}

/// A delivery run that a flush or the schedule started: it lasts until the route has
/// nothing due or the link fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub why: String,
    pub started_at: i64,
    /// The domains it covers; `None`: all of the route's mail.
    pub domains: Option<Vec<DomainScope>>,
}

impl Run {
    /// Whether the run covers mail for `domain`.
    #[cfg(test)]
    pub(crate) fn covers(&self, domain: &str) -> bool {
        self.domains
            .as_ref()
            .is_none_or(|list| covers(list, domain))
    }

    /// Joins a request for `scope` (`None`: the whole route) to the run.
    fn join(&mut self, scope: Option<DomainScope>) {
        match (&mut self.domains, scope) {
            (_, None) => self.domains = None,
            (None, Some(_)) => {}
            (Some(list), Some(s)) => {
                if !list.contains(&s) {
                    list.push(s);
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    pub state: LinkState,
    pub reason: String,
    /// Unix seconds of the last change of `state`.
    pub since: i64,
    pub run: Option<Run>,
}

/// A change of `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: LinkState,
    pub to: LinkState,
}

impl Gate {
    pub fn new(now: i64) -> Gate {
        Gate {
            state: LinkState::Unknown,
            reason: "not tried since start".into(),
            since: now,
            run: None,
        }
    }

    /// Applies `evidence`; returns the change of state, if any.
    pub(crate) fn observe(&mut self, evidence: Evidence, now: i64) -> Option<Change> {
        let (to, reason) = match evidence {
            Evidence::Reached(why) => (LinkState::Up, why),
            Evidence::Unreachable(why) => {
                self.run = None;
                (LinkState::Down, why)
            }
            Evidence::Flush(why) => self.start_run(why, None, now),
            Evidence::FlushDomain {
                why,
                domain,
                subdomains,
            } => self.start_run(why, Some((domain, subdomains)), now),
        };
        self.reason = reason;
        if to == self.state {
            return None;
        }
        let change = Change {
            from: self.state,
            to,
        };
        self.state = to;
        self.since = now;
        Some(change)
    }

    /// Starts a run (or joins the one going); the state, if known down, becomes unknown.
    fn start_run(
        &mut self,
        why: String,
        scope: Option<DomainScope>,
        now: i64,
    ) -> (LinkState, String) {
        match &mut self.run {
            Some(run) => run.join(scope),
            None => {
                self.run = Some(Run {
                    why: why.clone(),
                    started_at: now,
                    domains: scope.map(|s| vec![s]),
                })
            }
        }
        match self.state {
            LinkState::Down => (LinkState::Unknown, why),
            state => (state, self.reason.clone()),
        }
    }

    /// Whether delivery may run now under `mode` (`window_open`: inside a schedule
    /// window). Auto delivers unless the link is known down; schedule inside its windows
    /// and during runs; manual only during runs.
    pub(crate) fn is_open(&self, mode: LinkMode, window_open: bool) -> bool {
        let allowed = match mode {
            LinkMode::Auto => true,
            LinkMode::Schedule => window_open || self.run.is_some(),
            LinkMode::Manual => self.run.is_some(),
        };
        allowed && self.state != LinkState::Down
    }

    /// Online time accrues while the gate is open and the link known up (README, "Intermittent links").
    pub(crate) fn is_ageing(&self, mode: LinkMode, window_open: bool) -> bool {
        self.state == LinkState::Up && self.is_open(mode, window_open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Evidence::*;
    use LinkState::*;

    #[test]
    fn transitions() {
        let reached = || Reached("probe".into());
        let failed = || Unreachable("refused".into());
        let flush = || Flush("flush".into());
        // (start state, evidence, end state, changed)
        let table = [
            (Unknown, reached(), Up, true),
            (Unknown, failed(), Down, true),
            (Unknown, flush(), Unknown, false),
            (Up, reached(), Up, false),
            (Up, failed(), Down, true),
            (Up, flush(), Up, false),
            (Down, reached(), Up, true),
            (Down, failed(), Down, false),
            (Down, flush(), Unknown, true),
        ];
        for (start, evidence, end, changed) in table {
            let mut g = Gate::new(0);
            g.state = start;
            let change = g.observe(evidence.clone(), 10);
            assert_eq!(g.state, end, "{start:?} + {evidence:?}");
            assert_eq!(change.is_some(), changed, "{start:?} + {evidence:?}");
            assert_eq!(g.since, if changed { 10 } else { 0 });
        }
    }

    #[test]
    fn modes_decide_when_delivery_runs() {
        use LinkMode::*;
        // (mode, state, window open, run, open)
        let table = [
            (Auto, Unknown, false, false, true),
            (Auto, Up, false, false, true),
            (Auto, Down, false, false, false),
            (Auto, Down, false, true, false),
            (Schedule, Up, false, false, false),
            (Schedule, Up, true, false, true),
            (Schedule, Up, false, true, true),
            (Schedule, Down, true, false, false),
            (Manual, Up, true, false, false),
            (Manual, Unknown, false, true, true),
            (Manual, Down, false, true, false),
        ];
        for (mode, state, window, run, open) in table {
            let mut g = Gate::new(0);
            g.state = state;
            g.run = run.then(|| Run {
                why: "flush".into(),
                started_at: 0,
                domains: None,
            });
            assert_eq!(
                g.is_open(mode, window),
                open,
                "{mode:?} {state:?} window {window} run {run}"
            );
            assert_eq!(g.is_ageing(mode, window), open && state == Up);
        }
    }

    #[test]
    fn a_flush_starts_a_run_that_a_failure_ends() {
        let mut g = Gate::new(0);
        g.observe(Unreachable("refused".into()), 1);
        assert!(!g.is_open(LinkMode::Manual, false));
        let change = g.observe(Flush("ferrymail flush".into()), 2);
        assert_eq!(
            change,
            Some(Change {
                from: Down,
                to: Unknown
            })
        );
        assert_eq!(g.run.as_ref().map(|r| r.started_at), Some(2));
        assert!(
            g.is_open(LinkMode::Manual, false),
            "a flush tries even after a failure"
        );
        g.observe(Flush("again".into()), 3);
        assert_eq!(
            g.run.as_ref().map(|r| r.why.as_str()),
            Some("ferrymail flush"),
            "coalesced"
        );
        g.observe(Unreachable("timed out".into()), 4);
        assert_eq!(g.run, None);
        assert!(!g.is_open(LinkMode::Manual, false));
    }

    #[test]
    fn a_domain_flush_covers_that_domain_until_a_whole_flush_joins() {
        let mut g = Gate::new(0);
        let domain = |d: &str, subdomains| FlushDomain {
            why: "flush".into(),
            domain: d.into(),
            subdomains,
        };
        g.observe(domain("a.test", false), 1);
        let run = g.run.clone().unwrap();
        assert!(run.covers("a.test") && !run.covers("b.test") && !run.covers("x.a.test"));
        g.observe(domain("c.test", true), 2);
        let run = g.run.clone().unwrap();
        assert!(run.covers("a.test") && run.covers("x.c.test") && !run.covers("b.test"));
        g.observe(Flush("all".into()), 3);
        assert!(
            g.run.unwrap().covers("b.test"),
            "a whole flush widens the run"
        );
    }
}
