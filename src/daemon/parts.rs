//! The daemon's parts that a configuration decides, built the same way at start and at
//! each reload from a `Prepared` configuration and the `Base` that lives as long as the
//! daemon (the spool, the link gates, the counters, the listeners' sockets).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::pickup::Pickup;
use super::prepare::Prepared;
use crate::config::ListenKind;
use crate::delivery::connect::Us;
use crate::delivery::mx::MxResolver;
use crate::delivery::runner::Progress;
use crate::link::Link;
use crate::link::task::Routing;
use crate::metrics::Metrics;
use crate::queue::kit::{Kit, OwnerSettings};
use crate::queue::notices::NoticeSettings;
use crate::queue::retry::RetryPolicy;
use crate::server::{ConnectionLimits, ServerContext, ServerStats, SessionConfig, Timeouts};
use crate::spool::Spool;

/// What every configuration shares.
pub struct Base {
    pub spool: Spool,
    pub shutdown: CancellationToken,
    pub etrn: Arc<dyn crate::server::etrn::Flush>,
    pub stats: Arc<ServerStats>,
    pub progress: Arc<Progress>,
    pub link: Arc<Link>,
    pub metrics: Arc<Metrics>,
    /// The SMTP listeners' addresses, as bound.
    pub bound: Vec<SocketAddr>,
}

/// The context of an SMTP listener of `kind`.
pub fn server_context(base: &Base, p: &Prepared, kind: ListenKind) -> ServerContext {
    let accept = &p.config.accept;
    ServerContext {
        session: Arc::new(SessionConfig {
            etrn_available: true,
            identity: p.identity.clone(),
            ..SessionConfig::from_config(&p.config, kind)
        }),
        spool: base.spool.clone(),
        timeouts: Timeouts {
            command: accept.command_timeout.0,
            data: accept.command_timeout.0,
            session: accept.session_timeout.0,
            min_data_rate: accept.min_data_rate.0,
            ..Timeouts::default()
        },
        limits: ConnectionLimits {
            max_connections: accept.max_connections,
            max_per_client: accept.max_connections_per_client,
            reserved: accept.reserved_connections,
        },
        shutdown: base.shutdown.clone(),
        tls: p.tls.clone(),
        auth: p.auth.clone(),
        etrn: Some(base.etrn.clone()),
        stats: base.stats.clone(),
    }
}

/// What delivery needs: routes, client settings, the resolver.
pub fn kit(base: &Base, p: &Prepared, resolver: &Arc<MxResolver>) -> Arc<Kit> {
    Arc::new(Kit {
        spool: base.spool.clone(),
        router: p.router.clone(),
        settings: p.settings.clone(),
        resolver: resolver.clone(),
        us: Us {
            hostname: p.config.hostname.to_ascii_lowercase(),
            listeners: base.bound.clone(),
        },
        progress: base.progress.clone(),
        link: base.link.clone(),
        metrics: base.metrics.clone(),
        shutdown: base.shutdown.clone(),
    })
}

/// What the queue owner is configured with.
pub fn owner_settings(base: &Base, p: &Prepared, resolver: &Arc<MxResolver>) -> OwnerSettings {
    OwnerSettings {
        kit: kit(base, p, resolver),
        retry: RetryPolicy::from_config(&p.config.retry),
        notices: Arc::new(NoticeSettings {
            hostname: p.config.hostname.clone(),
            admin: p.config.admin.clone(),
            identity: p.identity.clone(),
            relay_networks: p.config.accept.relay_networks.clone(),
        }),
    }
}

/// What the link task reaches routes with.
pub fn routing(p: &Prepared, resolver: &Arc<MxResolver>) -> Routing {
    Routing {
        router: p.router.clone(),
        settings: p.settings.clone(),
        resolver: resolver.clone(),
    }
}

/// How local submissions are picked up.
pub fn pickup(base: &Base, p: &Prepared) -> Pickup {
    Pickup {
        spool: base.spool.clone(),
        hostname: p.config.hostname.clone(),
        max_message_size: p.config.accept.max_message_size.0,
        identity: p.identity.clone(),
    }
}
