//! Flush requests, from wherever they come (`ferrymail flush`, `sendmail -q`, SIGUSR1,
//! the trigger file, ETRN, `every`), and how the queue owner carries them out: the
//! routes concerned start a run, which their link gates honour in every mode; what
//! waits for those gates is released, and waiting mail in scope is made due now, a step
//! at a time after the answer; a hold route's domain is opened when named. A flush
//! naming a domain moves that domain's mail only. Requests are coalesced: a run already
//! going is joined, never doubled.

use std::collections::{HashSet, VecDeque};

use tokio::sync::oneshot;

use super::handle::{FlushTarget, Started};
use super::jobs::{Change, ChangeOutcome, Job, Reply};
use super::owner::{Owner, State};
use crate::link::Permit;
use crate::spool::{Scope, SpoolError};

impl Owner {
    /// Releases what waits for `route`'s link, as far as its permit lets it go.
    pub(super) async fn release_link_wait(&self, route: String, run: bool) -> Job {
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
            released: 0,
        }
    }

    /// Domains with pending mail at `domain` or under it.
    pub(super) async fn domains_under(&self, domain: &str) -> Vec<String> {
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

    /// Starts a flush: a run on the routes it concerns, then, a step at a time after
    /// the answer, what waits for their gates released and the mail it names made due.
    pub(super) async fn flush(
        &self,
        st: &mut State,
        target: FlushTarget,
        why: &str,
        reply: Option<oneshot::Sender<Result<Started, SpoolError>>>,
    ) {
        let link = &self.kit.link;
        let (coalesced, routes, domains) = match &target {
            FlushTarget::All => {
                let routes = self.kit.router.routes().filter(|r| !r.hold);
                let routes = routes.map(|r| r.name.clone()).collect();
                (link.flush(None, why, None), routes, None)
            }
            FlushTarget::Domain { domain, subdomains } => {
                let route = self.kit.router.route(domain);
                if route.hold {
                    self.open_domains.open(domain, *subdomains);
                }
                let scope = Some((domain.clone(), *subdomains));
                let coalesced = link.flush(Some(&route.name), why, scope);
                let domains = if *subdomains {
                    self.domains_under(domain).await
                } else {
                    vec![domain.clone()]
                };
                (coalesced, vec![route.name.clone()], Some(domains))
            }
        };
        tracing::info!(why, of = %target, coalesced, "flush");
        for route in routes {
            let job = self.release_link_wait(route, true).await;
            st.jobs.push_back(job);
        }
        let (changes, released) = match domains {
            None => (vec![Change::Retry(Scope::All)], 0),
            Some(domains) => {
                let changes = domains
                    .iter()
                    .flat_map(|d| {
                        let scope = Scope::Domain(d.clone());
                        [Change::Release(scope.clone()), Change::Retry(scope)]
                    })
                    .collect();
                (changes, self.pending_in(&domains).await)
            }
        };
        st.jobs.push_back(Job::Changes {
            todo: changes.into(),
            by: "a flush",
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
}
