//! The queue owner's wake loop (DESIGN §3 `queue/`): it sleeps until the earliest due
//! recipient, a new commit or a flush, claims what is due, sends each route's share its
//! way, and records every outcome. The route is decided in the claim itself: hold routes
//! put their mail `held` until a flush or ETRN names the domain, and direct MX (not in this
//! version) leaves it `queued`, postponed, saying so. Bounces get their DSN committed
//! *before* the bounce is recorded, so a crash can at worst repeat a notification, never
//! lose one. Nothing expires yet: expiry
//! counts online time, which arrives with the link gate (DESIGN §1.4).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::retry::RetryPolicy;
use crate::delivery::client::ClientSettings;
use crate::delivery::dsn::{self, Action, Reported};
use crate::delivery::route::{Route, Router, Target};
use crate::delivery::runner::{Bounced, run_relay};
use crate::spool::claims::{Claim, Decide, Disposition, next_due};
use crate::spool::{Envelope, Origin, QueueId, Recipient, Spool, index, now_unix};

/// How long a claim lasts before its recipients are due again (a stuck delivery).
pub const LEASE: Duration = Duration::from_secs(3600);
/// Most recipients claimed per pass.
const CLAIM_LIMIT: usize = 2000;
/// The longest the loop sleeps without a reason to wake.
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub struct Scheduler {
    pub spool: Spool,
    pub router: Router,
    pub settings: HashMap<String, ClientSettings>,
    pub retry: RetryPolicy,
    /// Retry delay after our link was down (the probe interval).
    pub link_retry: Duration,
    pub hostname: String,
    /// Domains whose hold routes a flush or ETRN has opened.
    pub open_domains: Arc<OpenDomains>,
}

/// How long a flush or ETRN keeps a held domain open for delivery.
pub const OPEN_FOR: Duration = Duration::from_secs(600);

/// Held domains opened for delivery, each until a deadline.
#[derive(Default)]
pub struct OpenDomains {
    open: std::sync::Mutex<Vec<(String, bool, std::time::Instant)>>,
}

impl OpenDomains {
    /// Opens `domain` (and its subdomains when `subdomains`) for `OPEN_FOR`.
    pub fn open(&self, domain: &str, subdomains: bool) {
        let until = std::time::Instant::now() + OPEN_FOR;
        let mut open = self.open.lock().expect("not poisoned");
        open.retain(|(_, _, t)| *t > std::time::Instant::now());
        open.push((
            domain.trim_end_matches('.').to_ascii_lowercase(),
            subdomains,
            until,
        ));
    }

    pub fn is_open(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = std::time::Instant::now();
        self.open
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(d, subdomains, until)| {
                *until > now
                    && (domain == *d || (*subdomains && domain.ends_with(&format!(".{d}"))))
            })
    }
}

impl Scheduler {
    pub async fn run(self, shutdown: CancellationToken) {
        let wake: Arc<Notify> = self.spool.wake_handle();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = now_unix();
            let decide = self.disposition();
            let claims = match self
                .spool
                .claim(now, LEASE.as_secs() as i64, CLAIM_LIMIT, decide)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming due mail failed; retrying shortly");
                    Vec::new()
                }
            };
            if claims.is_empty() {
                let sleep = self.until_next_due(now).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
                continue;
            }
            self.deliver(claims).await;
        }
    }

    /// The claim-time routing decision: a hold route holds unless its domain is open (a
    /// flush or ETRN named it); relay routes deliver; direct MX (not in this version)
    /// waits, saying why.
    fn disposition(&self) -> Arc<Decide> {
        let router = self.router.clone();
        let open = self.open_domains.clone();
        let postpone = self.retry.max.as_secs() as i64;
        Arc::new(move |domain: &str| {
            let route = router.route(domain);
            if route.hold && !open.is_open(domain) {
                return Disposition::Hold {
                    reply: "held until a flush or ETRN names its domain".into(),
                };
            }
            match route.target {
                Target::Relay { .. } => Disposition::Deliver,
                Target::Mx { .. } => Disposition::Postpone {
                    reply: "direct MX delivery is not in this version of ferrymail; set [upstream] or a route".into(),
                    after: postpone,
                },
            }
        })
    }

    async fn deliver(&self, claims: Vec<Claim>) {
        let mut by_route: BTreeMap<String, (Route, Vec<Claim>)> = BTreeMap::new();
        for c in claims {
            let route = self.router.route(&c.domain).clone();
            by_route
                .entry(route.name.clone())
                .or_insert_with(|| (route, Vec::new()))
                .1
                .push(c);
        }
        let mut records = Vec::new();
        let mut bounced = Vec::new();
        for (name, (route, claims)) in by_route {
            let Target::Relay { host_port, .. } = &route.target else {
                tracing::error!(route = %name, "claimed mail for a route that does not deliver");
                continue;
            };
            let Some(settings) = self.settings.get(&name) else {
                tracing::error!(route = %name, "no client settings for the route");
                continue;
            };
            let result = run_relay(
                &self.spool,
                host_port,
                settings,
                &self.retry,
                self.link_retry,
                claims,
            )
            .await;
            records.extend(result.records);
            bounced.extend(result.bounced);
        }
        for b in bounced {
            self.send_dsn(b).await;
        }
        if let Err(e) = self.spool.record(records, now_unix()).await {
            tracing::error!(error = %e, "recording outcomes failed; the claims will expire and be retried");
        }
    }

    /// Commits the failure notice for a message's bounced recipients, if wanted.
    async fn send_dsn(&self, b: Bounced) {
        let id = b.envelope.id;
        let reports: Vec<Reported<'_>> = b
            .bounces
            .iter()
            .filter_map(|bounce| {
                let recipient = b.envelope.recipients.get(bounce.position)?;
                dsn::wanted(&b.envelope, recipient, Action::Failed).then(|| Reported {
                    recipient,
                    action: Action::Failed,
                    status: &bounce.classified.status,
                    remote_mta: bounce.host.as_deref(),
                    diagnostic: &bounce.classified.reason,
                })
            })
            .collect();
        if reports.is_empty() {
            tracing::info!(id = %id, "no DSN: the null sender, or NOTIFY did not ask for one");
            return;
        }
        let dsn_id = QueueId::generate(std::time::SystemTime::now());
        let content = dsn::build(
            &self.hostname,
            &b.envelope,
            &reports,
            &b.content,
            now_unix(),
            dsn_id.as_str(),
        );
        let envelope = Envelope {
            id: dsn_id,
            smtputf8: b.envelope.smtputf8,
            ..Envelope::new(
                "",
                vec![Recipient::new(b.envelope.sender.clone())],
                Origin {
                    kind: "dsn".into(),
                    ..Origin::default()
                },
            )
        };
        let spool = self.spool.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            let mut draft = spool.create_draft(envelope)?;
            draft.write(&content)?;
            draft.seal()
        })
        .await;
        match sealed {
            Ok(Ok(sealed)) => match self.spool.commit(sealed).await {
                Ok(queued) => {
                    tracing::info!(id = %id, dsn = %queued, to = %b.envelope.sender, "DSN queued")
                }
                Err(e) => tracing::error!(id = %id, error = %e, "DSN could not be queued"),
            },
            Ok(Err(e)) => tracing::error!(id = %id, error = %e, "DSN could not be written"),
            Err(e) => tracing::error!(id = %id, error = %e, "DSN task failed"),
        }
    }

    async fn until_next_due(&self, now: i64) -> Duration {
        let index_path = self.spool.layout().index.clone();
        let next = tokio::task::spawn_blocking(move || {
            index::open_reader(&index_path)
                .ok()
                .flatten()
                .and_then(|c| next_due(&c).ok().flatten())
        })
        .await
        .ok()
        .flatten();
        match next {
            Some(at) if at > now => Duration::from_secs((at - now) as u64).min(MAX_SLEEP),
            Some(_) => Duration::from_millis(200),
            None => MAX_SLEEP,
        }
    }
}
