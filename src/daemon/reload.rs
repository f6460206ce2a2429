//! SIGHUP: the configuration is read again and put in force without stopping. It is
//! prepared whole first (a file that does not parse, a certificate or password file that
//! cannot be read: nothing changes, and the log says why), then swapped in: the SMTP
//! listeners' rules, certificate and users for new connections; the routes, link
//! policies, client settings and retry policy for the link gates, the link task and the
//! queue owner; the held domains' opening time; the pickup's limits. SMTP sessions and
//! deliveries in progress finish with what they started with. What needs its sockets or
//! the spool taken again (`spool`, `listen`, `metrics`, `link.trigger_file`) keeps its
//! old value until the next start, and the log says so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::parts::{self, Base};
use super::pickup::Pickup;
use super::prepare::{file_warnings, prepare};
use crate::config::{self, Config, Listen, ListenKind};
use crate::current::Current;
use crate::delivery::mx::MxResolver;
use crate::link::task::Routing;
use crate::queue::handle::QueueHandle;
use crate::queue::open_domains::OpenDomains;
use crate::server::ServerContext;

/// Everything a reload replaces, and where.
pub struct Live {
    /// The file the daemon started from (`None`: built-in defaults, looked up again).
    pub source: Option<PathBuf>,
    pub base: Base,
    /// The configuration in force.
    pub running: Mutex<Config>,
    pub resolver: Mutex<Arc<MxResolver>>,
    /// Each SMTP listener's entry and context.
    pub listeners: Vec<(Listen, Arc<Current<ServerContext>>)>,
    pub routing: Arc<Current<Routing>>,
    pub queue: QueueHandle,
    pub open_domains: Arc<OpenDomains>,
    pub pickup: Arc<Current<Pickup>>,
    pub bundles: Arc<Current<crate::bundle::take::Site>>,
    /// Our name, as `status` shows it.
    pub hostname: Arc<Current<String>>,
}

/// Reloads at each SIGHUP until shutdown.
pub async fn on_sighup(live: Arc<Live>, shutdown: CancellationToken) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGHUP: reloading needs a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => match live.reload().await {
                Ok(()) => tracing::info!("SIGHUP: configuration reloaded"),
                Err(e) => tracing::error!(
                    "SIGHUP: configuration not reloaded, the running one stays: {e}"
                ),
            },
        }
    }
}

impl Live {
    pub async fn reload(&self) -> Result<(), String> {
        let loaded = config::load(self.source.as_deref()).map_err(|e| e.to_string())?;
        let source = loaded.source.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(loaded.config))
            .await
            .map_err(|e| e.to_string())??;
        for (i, (listen, _)) in self.listeners.iter().enumerate() {
            let kind = &listen.kind;
            let needs_tls = match kind {
                ListenKind::Smtp => false,
                ListenKind::Odmr => listen.require_tls,
                ListenKind::Submission | ListenKind::Smtps => true,
            };
            if needs_tls && prepared.tls.is_none() {
                return Err(format!(
                    "listen[{i}] is a running {} listener, which needs [tls]",
                    kind.as_str()
                ));
            }
            if *kind == ListenKind::Submission && prepared.auth.is_none() {
                return Err(format!(
                    "listen[{i}] is a running submission listener, which needs accept.users"
                ));
            }
        }
        let mut prepared = prepared;
        let running = self.running.lock().expect("not poisoned").clone();
        for key in keep_until_restart(&running, &mut prepared.config) {
            tracing::warn!("reload: {key} changed; it takes effect at the next restart");
        }
        for warning in file_warnings(&prepared.config, source.as_deref())
            .into_iter()
            .chain(prepared.warnings.iter().cloned())
        {
            tracing::warn!("{warning}");
        }
        let resolver = {
            let mut current = self.resolver.lock().expect("not poisoned");
            if running.dns.servers != prepared.config.dns.servers {
                *current = Arc::new(MxResolver::new(
                    &prepared.config.dns.servers,
                    super::DNS_TIMEOUT,
                ));
            }
            current.clone()
        };

        for (listen, ctx) in &self.listeners {
            ctx.set(Arc::new(parts::server_context(
                &self.base, &prepared, listen,
            )));
        }
        self.routing
            .set(Arc::new(parts::routing(&self.base, &prepared, &resolver)));
        self.base
            .link
            .reconfigure(&prepared.config.link, &prepared.router);
        self.open_domains
            .set_open_for(prepared.config.etrn.open_for.0);
        self.pickup
            .set(Arc::new(parts::pickup(&self.base, &prepared)));
        self.bundles
            .set(Arc::new(parts::bundle_site(&self.base, &prepared)));
        self.hostname
            .set(Arc::new(prepared.config.hostname.clone()));
        self.queue
            .reconfigure(parts::owner_settings(&self.base, &prepared, &resolver))
            .await
            .map_err(|e| format!("the queue owner: {e}"))?;
        *self.running.lock().expect("not poisoned") = prepared.config;
        Ok(())
    }
}

/// Keys that need the daemon started again: `new` keeps `running`'s values for them;
/// returns those that differ.
fn keep_until_restart(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.spool != running.spool {
        changed.push("spool");
        new.spool = running.spool.clone();
    }
    let listen = |c: &Config| -> Vec<_> { c.listen.iter().map(|l| (l.addr, l.kind)).collect() };
    if listen(new) != listen(running) {
        changed.push("listen");
        new.listen = running.listen.clone();
    }
    if new.metrics.as_ref().map(|m| m.listen) != running.metrics.as_ref().map(|m| m.listen) {
        changed.push("metrics");
        new.metrics = running.metrics.clone();
    }
    if new.link.trigger_file != running.link.trigger_file {
        changed.push("link.trigger_file");
        new.link.trigger_file = running.link.trigger_file.clone();
    }
    changed
}
