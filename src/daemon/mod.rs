//! `ferrymail serve`: prepares the configuration (`prepare`), takes the spool lock,
//! recovers the spool, then runs the SMTP listeners (with ETRN), the maildrop pickup, the
//! queue owner (which runs delivery), the link task, the flush triggers (SIGUSR1, the
//! trigger file), the control socket and the reload on SIGHUP (`reload`) until shutdown
//! is requested, and stops them cleanly.

pub mod control;
mod etrn;
pub mod odmr;
mod odmr_edge;
mod parts;
mod permissions;
pub mod pickup;
pub mod prepare;
mod reload;
pub mod systemd;
mod triggers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Listen};
use crate::current::Current;
use crate::delivery::mx::MxResolver;
use crate::delivery::runner::DeliveryTotals;
use crate::exit::{self, Failure};
use crate::link::LinkMonitor;
use crate::link::schedule::local_zone;
use crate::link::task::LinkTask;
use crate::queue::handle::QueueHandle;
use crate::queue::open_domains::OpenDomains;
use crate::queue::owner::{Inputs, Owner};
use crate::spool::lock::{LockError, SpoolLock};
use crate::spool::{Layout, RealFs, RecoveryReport, Spool, SpoolOptions, now_unix};
use parts::Base;

/// How often `maildrop/new` is rescanned even without a notify event (inotify misses
/// events on some file systems, and drops may predate the watch).
pub const PICKUP_RESCAN: Duration = Duration::from_secs(30);

/// How long shutdown waits for a delivery in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long one DNS query may take before the resolver counts as unreachable.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// A `maildrop/tmp` file untouched this long was left by a killed `sendmail`.
pub const STALE_DROP: Duration = Duration::from_secs(36 * 3600);

pub async fn run(
    config: Config,
    source: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), Failure> {
    for warning in prepare::file_warnings(&config, source.as_deref()) {
        tracing::warn!("{warning}");
    }
    let prepared = prepare::prepare(config).map_err(|e| Failure::new(exit::CONFIG, e))?;
    for warning in &prepared.warnings {
        tracing::warn!("{warning}");
    }
    let config = prepared.config.clone();
    permissions::private_umask();
    raise_fd_limit();
    let layout = Layout::new(&config.spool);
    let _lock = SpoolLock::acquire(&layout.root, &layout.lock).map_err(|e| match e {
        LockError::Busy { .. } => Failure::new(exit::TEMPFAIL, e.to_string()),
        LockError::Io { .. } => Failure::new(exit::CANTCREAT, e.to_string()),
    })?;
    let (spool, recovery) = open_spool(&layout).await?;
    permissions::secure_spool(&layout);

    let resolver = Arc::new(MxResolver::new(&config.dns.servers, DNS_TIMEOUT));
    let (link, link_inputs) = LinkMonitor::new(&config.link, &prepared.router, local_zone());
    let link = Arc::new(link);
    let open_domains = Arc::new(OpenDomains::new(config.etrn.open_for.0));
    let (queue, queue_events) = QueueHandle::new();

    let sockets = bind_listeners(&config).await?;
    let base = Base {
        spool: spool.clone(),
        shutdown: shutdown.clone(),
        etrn: Arc::new(etrn::EtrnService(queue.clone())),
        stats: Arc::new(crate::server::ServerStats::default()),
        progress: Arc::new(DeliveryTotals::default()),
        link: link.clone(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        bound: sockets.iter().map(|(_, addr, _)| *addr).collect(),
        queue: queue.clone(),
        odmr: Arc::new(odmr::OdmrState::default()),
        odmr_pulling: Arc::default(),
        partials: crate::ferry::partial::PartialStore::new(
            spool.layout().partial.clone(),
            config.accept.resume_keep.0,
        ),
    };
    let mut smtp_tasks = Vec::new();
    let mut listeners = Vec::new();
    for (socket, _, listen) in sockets {
        let ctx = Arc::new(Current::new(parts::server_context(
            &base, &prepared, &listen,
        )));
        listeners.push((listen, ctx.clone()));
        smtp_tasks.push(tokio::spawn(crate::server::serve(socket, ctx)));
    }

    let hostname = Arc::new(Current::new(config.hostname.clone()));
    let bundles = Arc::new(Current::new(parts::bundle_site(&base, &prepared)));
    let handler = control::DaemonControl {
        bundles: bundles.clone(),
        bundle_lock: Arc::default(),
        queue: queue.clone(),
        link: link.clone(),
        open_domains: open_domains.clone(),
        progress: base.progress.clone(),
        spool: spool.clone(),
        hostname: hostname.clone(),
        started_at: now_unix(),
        recovery,
        listeners: base.bound.iter().map(ToString::to_string).collect(),
        odmr: base.odmr.clone(),
    };
    let control_task = start_control(&layout, handler, &shutdown)?;

    let routing = Arc::new(Current::new(parts::routing(&base, &prepared, &resolver)));
    let link_task = LinkTask {
        link: link.clone(),
        routing: routing.clone(),
    };
    let link_task = tokio::spawn(link_task.run(link_inputs.events, shutdown.clone()));
    let triggers_task = tokio::spawn(triggers::run(
        queue.clone(),
        link.clone(),
        config.link.trigger_file.clone(),
        shutdown.clone(),
    ));

    let metrics_task = start_metrics(&config, &base, &spool, &link, &shutdown).await?;
    let settings = parts::owner_settings(&base, &prepared, &resolver);
    let owner_task = start_queue_owner(
        settings,
        &queue,
        &open_domains,
        queue_events,
        link_inputs.news,
        &shutdown,
    );

    let pickup = Arc::new(Current::new(parts::pickup(&base, &prepared)));
    let pickup_task = tokio::spawn(run_pickup(pickup.clone(), shutdown.clone()));

    let live = Arc::new(reload::Live {
        source,
        base,
        running: std::sync::Mutex::new(config),
        resolver: std::sync::Mutex::new(resolver),
        listeners,
        routing,
        queue: queue.clone(),
        open_domains,
        pickup,
        bundles,
        hostname,
    });
    let reload_task = tokio::spawn(reload::on_sighup(live, shutdown.clone()));

    tracing::info!(pid = std::process::id(), spool = %layout.root.display(), "ferrymail ready");
    let notifier = systemd::Notifier::from_env().map(Arc::new);
    let status_task = notifier.clone().map(|n| {
        tokio::spawn(systemd::report_status(
            n,
            link.clone(),
            spool.clone(),
            shutdown.clone(),
        ))
    });
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    Running {
        status: status_task,
        reload: reload_task,
        pickup: pickup_task,
        control: control_task,
        triggers: triggers_task,
        link: link_task,
        metrics: metrics_task,
        owner: owner_task,
        smtp: smtp_tasks,
    }
    .stop()
    .await;
    let _ = tokio::task::spawn_blocking(move || spool.close()).await;
    let _ = std::fs::remove_file(&layout.control);
    tracing::info!("stopped");
    Ok(())
}

/// The control socket (`ferrymail queue`, `flush`, `status`), served until shutdown.
fn start_control(
    layout: &Layout,
    handler: control::DaemonControl,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    let listener = crate::control::server::bind(&layout.control).map_err(|e| {
        Failure::new(
            exit::CANTCREAT,
            format!("control socket {}: {e}", layout.control.display()),
        )
    })?;
    Ok(tokio::spawn(crate::control::server::serve(
        listener,
        Arc::new(handler),
        shutdown.clone(),
    )))
}

/// The queue owner, the one task that changes recipient state, fed by the queue's
/// handle (`events`) and the link's news.
fn start_queue_owner(
    settings: crate::queue::kit::OwnerSettings,
    queue: &QueueHandle,
    open_domains: &Arc<OpenDomains>,
    events: tokio::sync::mpsc::UnboundedReceiver<crate::queue::handle::QueueEvent>,
    news: tokio::sync::mpsc::UnboundedReceiver<crate::link::News>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel();
    let owner = Owner {
        kit: settings.kit,
        handle: queue.clone(),
        retry: settings.retry,
        notices: settings.notices,
        open_domains: open_domains.clone(),
        due: due_tx,
    };
    let inputs = Inputs {
        events,
        due: due_rx,
        news,
    };
    tokio::spawn(owner.run(inputs, shutdown.clone()))
}

/// Opens the spool, recovering it, and says what recovery did.
async fn open_spool(layout: &Layout) -> Result<(Spool, RecoveryReport), Failure> {
    let open_layout = layout.clone();
    let (spool, recovery) = tokio::task::spawn_blocking(move || {
        Spool::open(open_layout, Arc::new(RealFs), SpoolOptions::default())
    })
    .await
    .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?
    .map_err(|e| {
        Failure::new(
            exit::IOERR,
            format!("opening spool {}: {e}", layout.root.display()),
        )
    })?;
    if recovery.repaired() {
        tracing::warn!(spool = %layout.root.display(), "spool recovered: {recovery}");
    } else {
        tracing::info!(spool = %layout.root.display(), "spool opened: {recovery}");
    }
    Ok((spool, recovery))
}

/// Binds every `[[listen]]` address before anything is served: a port we cannot have
/// stops the start, with the address in the error.
async fn bind_listeners(
    config: &Config,
) -> Result<Vec<(TcpListener, SocketAddr, Listen)>, Failure> {
    let mut sockets = Vec::new();
    for listen in &config.listen {
        let socket = TcpListener::bind(listen.addr).await.map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot listen on {}: {e}", listen.addr),
            )
        })?;
        let addr = socket
            .local_addr()
            .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
        tracing::info!(addr = %addr, kind = listen.kind.as_str(), "listening");
        sockets.push((socket, addr, listen.clone()));
    }
    Ok(sockets)
}

/// Serves `/metrics` where `[metrics] listen` asks for it.
async fn start_metrics(
    config: &Config,
    base: &Base,
    spool: &Spool,
    link: &Arc<LinkMonitor>,
    shutdown: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, Failure> {
    let Some(m) = &config.metrics else {
        return Ok(None);
    };
    let socket = TcpListener::bind(m.listen).await.map_err(|e| {
        Failure::new(
            exit::UNAVAILABLE,
            format!("metrics: cannot listen on {}: {e}", m.listen),
        )
    })?;
    tracing::info!(addr = %m.listen, "metrics at /metrics");
    let sources = Arc::new(crate::metrics::http::Sources {
        metrics: base.metrics.clone(),
        spool: spool.clone(),
        link: link.clone(),
        server: base.stats.clone(),
    });
    Ok(Some(tokio::spawn(crate::metrics::http::serve(
        socket,
        sources,
        shutdown.clone(),
    ))))
}

/// What `run` started, to be stopped once shutdown is asked for: the tasks that take
/// new work first, then the queue owner, then the SMTP listeners (whose sessions may be
/// committing mail).
struct Running {
    status: Option<JoinHandle<()>>,
    reload: JoinHandle<()>,
    pickup: JoinHandle<()>,
    control: JoinHandle<()>,
    triggers: JoinHandle<()>,
    link: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    owner: JoinHandle<()>,
    smtp: Vec<JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        if let Some(task) = self.status {
            let _ = task.await;
        }
        let _ = self.reload.await;
        let _ = self.pickup.await;
        let _ = self.control.await;
        let _ = self.triggers.await;
        let _ = self.link.await;
        if let Some(task) = self.metrics {
            let _ = task.await;
        }
        // A delivery in progress over a dying link could take minutes: give it a moment,
        // then stop it. Its claims stay in_flight and recovery makes them due at the next
        // start.
        let owner_abort = self.owner.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.owner)
            .await
            .is_err()
        {
            tracing::warn!(
                "delivery still running at shutdown; stopped (it resumes at the next start)"
            );
            owner_abort.abort();
        }
        for task in self.smtp {
            let _ = task.await;
        }
    }
}

/// Raises the soft limit on open files to the hard one: each SMTP session, delivery and
/// control connection holds a descriptor, and 1024 (the usual soft limit) runs out
/// before the connection caps do.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one for open files (EPERM).
    if limit.current == limit.maximum || limit.maximum.is_none() {
        return;
    }
    let was = limit.current;
    limit.current = limit.maximum;
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => tracing::debug!(?was, now = ?limit.current, "open file limit raised"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

async fn run_pickup(current: Arc<Current<pickup::Pickup>>, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    let _watcher = crate::watch::watch_dir(
        &current.get().spool.layout().maildrop_new,
        None,
        "the maildrop",
        move || waker.notify_one(),
    );
    loop {
        let scan = current.get();
        let stop = shutdown.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            pickup::sweep_stale(&scan.spool.layout().maildrop_tmp, STALE_DROP);
            scan.scan(&|| stop.is_cancelled())
        });
        match scanned.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "maildrop pickup failed; will retry"),
            Err(e) => tracing::error!(error = %e, "maildrop pickup panicked; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(PICKUP_RESCAN) => {}
        }
    }
}
