//! The daemon's parts that a configuration decides, built the same way at start and at
//! each reload from a `Prepared` configuration and the `Base` that lives as long as the
//! daemon (the spool, the link gates, the counters, the listeners' sockets).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::pickup::Pickup;
use super::prepare::Prepared;
use crate::config::{Listen, ListenKind};
use crate::delivery::connect::LoopCheck;
use crate::delivery::mx::MxResolver;
use crate::delivery::runner::DeliveryTotals;
use crate::link::LinkMonitor;
use crate::link::task::{OnOpen, Routing};
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
    pub progress: Arc<DeliveryTotals>,
    pub link: Arc<LinkMonitor>,
    pub metrics: Arc<Metrics>,
    /// The SMTP listeners' addresses, as bound.
    pub bound: Vec<SocketAddr>,
    pub queue: crate::queue::handle::QueueHandle,
    /// ODMR turns' locks and records.
    pub odmr: Arc<super::odmr::OdmrState>,
    /// The station is collecting its mail from the hub now.
    pub odmr_pulling: Arc<std::sync::atomic::AtomicBool>,
    /// What arrived of cut XFERRY transfers, for every `ferry` listener.
    pub partials: Arc<crate::ferry::partial::PartialStore>,
}

/// The context of the SMTP listener `listen`.
pub(crate) fn server_context(base: &Base, p: &Prepared, listen: &Listen) -> ServerContext {
    let accept = &p.config.accept;
    let kind = listen.kind;
    ServerContext {
        session: Arc::new(SessionConfig {
            etrn_available: kind != ListenKind::Odmr,
            odmr_require_tls: listen.require_tls,
            auth_available: match kind {
                ListenKind::Odmr => !p.config.odmr_user.is_empty(),
                _ => p.config.accept.users.is_some(),
            },
            identity: p.identity.clone(),
            ferry: listen.ferry,
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
        odmr: (kind == ListenKind::Odmr).then(|| turns(base, p)),
        stats: base.stats.clone(),
        partials: listen.ferry.then(|| {
            base.partials.set_keep(accept.resume_keep.0);
            base.partials.clone()
        }),
    }
}

/// The turns of an `odmr` listener.
fn turns(base: &Base, p: &Prepared) -> Arc<dyn crate::server::turns::Turns> {
    let lanes: Vec<String> = p
        .router
        .routes()
        .filter(|r| r.target == crate::delivery::route::Target::Odmr)
        .map(|r| r.name.clone())
        .collect();
    base.odmr.set_lanes(lanes.clone());
    let settings = lanes
        .first()
        .and_then(|l| p.settings.get(l))
        .or_else(|| p.settings.values().next())
        .cloned()
        .expect("every configuration has a route");
    Arc::new(super::odmr::TurnService {
        users: p.odmr_users.clone(),
        lanes,
        settings,
        queue: base.queue.clone(),
        spool: base.spool.clone(),
        state: base.odmr.clone(),
        progress: base.progress.clone(),
        metrics: base.metrics.clone(),
    })
}

/// What delivery needs: routes, client settings, the resolver.
pub(crate) fn kit(base: &Base, p: &Prepared, resolver: &Arc<MxResolver>) -> Arc<Kit> {
    Arc::new(Kit {
        spool: base.spool.clone(),
        router: p.router.clone(),
        settings: p.settings.clone(),
        resolver: resolver.clone(),
        us: LoopCheck {
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
pub(crate) fn owner_settings(
    base: &Base,
    p: &Prepared,
    resolver: &Arc<MxResolver>,
) -> OwnerSettings {
    OwnerSettings {
        kit: kit(base, p, resolver),
        retry: RetryPolicy::from_config(&p.config.retry),
        notices: Arc::new(NoticeSettings {
            hostname: p.config.hostname.clone(),
            identity: p.identity.clone(),
            relay_networks: p.config.accept.relay_networks.clone(),
        }),
    }
}

/// What the link task reaches routes with, and the ODMR collection it starts.
pub(crate) fn routing(base: &Base, p: &Prepared, resolver: &Arc<MxResolver>) -> Routing {
    Routing {
        router: p.router.clone(),
        settings: p.settings.clone(),
        resolver: resolver.clone(),
        on_open: p.config.odmr.as_ref().map(|o| odmr_pull(base, p, o)),
    }
}

/// The station's ODMR collection: the hub reached with our credentials, and the session
/// served after the turn, which takes mail for `odmr.domains` only.
fn odmr_pull(base: &Base, p: &Prepared, odmr: &crate::config::Odmr) -> Arc<dyn OnOpen> {
    let route = p.settings.get(&odmr.route);
    let mut client = route
        .or_else(|| p.settings.values().next())
        .cloned()
        .expect("every configuration has a route");
    client.tls = odmr.tls;
    client.credentials = Some((odmr.username.clone(), p.odmr_secret.clone()));
    let listen = Listen {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        kind: ListenKind::Smtp,
        require_tls: false,
        ferry: false,
    };
    let mut ctx = server_context(base, p, &listen);
    ctx.session = Arc::new(SessionConfig {
        policy: crate::server::RelayPolicy::only(odmr.domains.clone()),
        tls_available: false,
        auth_available: false,
        etrn_available: false,
        ..(*ctx.session).clone()
    });
    ctx.tls = None;
    ctx.auth = None;
    ctx.etrn = None;
    Arc::new(super::odmr_edge::OdmrPull {
        settings: odmr.clone(),
        client,
        server: Arc::new(crate::current::Current::new(ctx)),
        pulling: base.odmr_pulling.clone(),
    })
}

/// How local submissions are picked up.
/// What bundle imports need, as the configuration in force says.
pub(crate) fn bundle_site(base: &Base, p: &Prepared) -> crate::bundle::take::Site {
    crate::bundle::take::Site {
        spool: base.spool.clone(),
        peers: p.bundle_peers.clone(),
        identity: p.identity.clone(),
        hostname: p.config.hostname.clone(),
        max_message_size: p.config.accept.max_message_size.0,
        router: p.router.clone(),
    }
}

pub fn pickup(base: &Base, p: &Prepared) -> Pickup {
    Pickup {
        spool: base.spool.clone(),
        hostname: p.config.hostname.clone(),
        max_message_size: p.config.accept.max_message_size.0,
        identity: p.identity.clone(),
    }
}
