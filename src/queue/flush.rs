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

    pub(super) async fn flush(
        &self,
        st: &mut State,
        target: FlushTarget,
        why: &str,
        reply: Option<oneshot::Sender<Result<Started, SpoolError>>>,
    ) {
        let mut domains = Vec::new();
        let (coalesced, changes) = match &target {
            FlushTarget::All => (
                self.kit.link.flush(None, why, None),
                vec![Change::Retry(Scope::All)],
            ),
            FlushTarget::Domain { domain, subdomains } => {
                let route = self.kit.router.route(domain);
                if route.hold {
                    self.open_domains.open(domain, *subdomains);
                }
                let coalesced = self.kit.link.flush(
                    Some(&route.name),
                    why,
                    Some((domain.clone(), *subdomains)),
                );
                domains = if *subdomains {
                    self.domains_under(domain).await
                } else {
                    vec![domain.clone()]
                };
                let mut changes = Vec::new();
                for d in domains.clone() {
                    changes.push(Change::Release(Scope::Domain(d.clone())));
                    changes.push(Change::Retry(Scope::Domain(d)));
                }
                (coalesced, changes)
            }
        };
        tracing::info!(why, target = ?target, coalesced, "flush");
        // What waits for the gates the flush opened is released first, then what it
        // names is made due; both go a step at a time after the answer.
        let routes: Vec<String> = match &target {
            FlushTarget::All => self
                .kit
                .router
                .routes()
                .filter(|r| !r.hold)
                .map(|r| r.name.clone())
                .collect(),
            FlushTarget::Domain { domain, .. } => vec![self.kit.router.route(domain).name.clone()],
        };
        for route in routes {
            let job = self.release_link_wait(route, true).await;
            st.jobs.push_back(job);
        }
        let released = match &target {
            FlushTarget::All => 0,
            FlushTarget::Domain { .. } => self.pending_in(&domains).await,
        };
        st.jobs.push_back(Job::Changes {
            todo: changes.into(),
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
