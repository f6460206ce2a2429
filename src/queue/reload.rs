//! A reload reaching the queue owner: new routes, client settings, retry policy and
//! notice settings. The owner takes them between two events; committed mail is placed by
//! the new routes from then on, pending mail on a lane the new routes do not give is
//! moved (bounded steps, as at start), and mail waiting for a gate that is open now is
//! released. Runners already going finish their lane with the settings they started with.

use std::collections::VecDeque;

use super::jobs::Job;
use super::kit::OwnerSettings;
use super::owner::{Owner, State};
use super::placement;
use crate::link::Permit;

impl Owner {
    pub(super) async fn reconfigure(&mut self, st: &mut State, settings: OwnerSettings) {
        self.kit = settings.kit;
        self.retry = settings.retry;
        self.notices = settings.notices;
        if let Err(e) = self
            .kit
            .spool
            .set_placement(self.placement(), self.due.clone())
        {
            tracing::error!(error = %e, "reload: new mail could not be given the new routes");
        }
        self.place_anew(st).await;
        let routes: Vec<String> = self.kit.router.routes().map(|r| r.name.clone()).collect();
        for route in routes {
            if self.kit.link.permit(&route) == Permit::Open {
                let job = self.release_link_wait(route, false).await;
                st.jobs.push_back(job);
            }
        }
    }

    /// Moves pending mail whose lane the routes no longer give onto the one they give.
    pub(super) async fn place_anew(&self, st: &mut State) {
        match self.kit.spool.placed_domains().await {
            Ok(domains) => {
                let mut todo = VecDeque::new();
                for (domain, lane) in domains {
                    let placement = placement::place_route(&self.kit, &domain);
                    if lane.as_deref() != Some(placement.lane.as_str()) {
                        todo.push_back((domain, placement));
                    }
                }
                if !todo.is_empty() {
                    tracing::info!(
                        domains = todo.len(),
                        "placing mail on the configured routes"
                    );
                    st.jobs.push_back(Job::Place { todo });
                }
            }
            Err(e) => tracing::error!(error = %e, "reading where mail is placed failed"),
        }
    }
}
