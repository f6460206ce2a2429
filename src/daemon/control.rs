//! The daemon's answers to control requests. Queue changes and flushes go to the queue
//! owner; status and progress read the index on a read-only connection, and the link
//! gates from memory.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::bundle::{export, import, receipt};
use crate::control::server::Handler;
use crate::control::{FlushProgress, Request, Response, Status};
use crate::current::Current;
use crate::delivery::runner;
use crate::exit;
use crate::link::LinkMonitor;
use crate::queue::handle::FlushTarget;
use crate::queue::handle::QueueHandle;
use crate::queue::open_domains::OpenDomains;
use crate::spool::reader::ReadError;
use crate::spool::{IndexReader, RecipientState, RecoveryReport, Spool, now_unix};

#[derive(Clone)]
pub struct DaemonControl {
    pub spool: Spool,
    pub queue: QueueHandle,
    pub link: Arc<LinkMonitor>,
    pub open_domains: Arc<OpenDomains>,
    pub progress: Arc<runner::DeliveryTotals>,
    pub hostname: Arc<Current<String>>,
    pub started_at: i64,
    pub recovery: RecoveryReport,
    /// Bound SMTP listener addresses.
    pub listeners: Vec<String>,
    pub odmr: Arc<super::odmr::OdmrState>,
    /// What bundle exports and imports need, as a reload leaves it.
    pub bundles: Arc<crate::current::Current<crate::bundle::take::Site>>,
    /// One bundle export or import at a time.
    pub bundle_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Handler for DaemonControl {
    async fn handle(&self, request: Request, files: Vec<OwnedFd>) -> Response {
        match request {
            Request::BundleExport {
                route,
                format,
                max_bytes,
            } => {
                let request = export::Request {
                    route,
                    format,
                    max_bytes,
                };
                self.bundle_export(request, files).await
            }
            Request::BundleImport { .. } => self.bundle_import(files).await,
            Request::Ping => Response::Pong {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Request::Status => {
                let control = self.clone();
                match tokio::task::spawn_blocking(move || control.status()).await {
                    Ok(Ok(status)) => Response::Status(Box::new(status)),
                    Ok(Err(e)) => error(exit::IOERR, format!("status: {e}")),
                    Err(e) => error(exit::SOFTWARE, format!("status: {e}")),
                }
            }
            Request::Progress { domain } => {
                let control = self.clone();
                match tokio::task::spawn_blocking(move || control.progress(domain.as_deref())).await
                {
                    Ok(Ok(p)) => Response::Progress(p),
                    Ok(Err(e)) => error(exit::IOERR, format!("progress: {e}")),
                    Err(e) => error(exit::SOFTWARE, format!("progress: {e}")),
                }
            }
            Request::Change { action, ids, all } => {
                match self.queue.change(action.change(ids, all)).await {
                    Ok(outcome) => Response::Changed(outcome),
                    Err(e) => error(exit::TEMPFAIL, e.to_string()),
                }
            }
            Request::Flush { domain } => {
                // Like `postqueue -f`: whatever waits is tried now, not at its next attempt.
                let (target, why) = match domain {
                    Some(domain) => (
                        FlushTarget::Domain {
                            domain: domain.clone(),
                            subdomains: false,
                        },
                        format!("ferrymail flush --domain {domain}"),
                    ),
                    None => (FlushTarget::All, "ferrymail flush".to_owned()),
                };
                match self.queue.flush(target, &why).await {
                    Ok(started) => Response::FlushStarted {
                        released: started.released,
                        coalesced: started.coalesced,
                    },
                    Err(e) => error(exit::TEMPFAIL, e.to_string()),
                }
            }
        }
    }
}

fn log_import(r: &import::Imported) {
    tracing::info!(
        kind = %r.kind, bundle = %r.bundle, node = %r.node, messages = r.messages,
        recipients = r.recipients, duplicates = r.duplicates, refused = r.refused.len(),
        unread = r.unread.len(), delivered = r.delivered, bounced = r.bounced,
        "bundle imported"
    );
}

/// Writes `bytes` and makes them durable when `out` is a file.
fn write_durably(mut out: File, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    out.write_all(bytes)?;
    if out.metadata()?.is_file() {
        out.sync_all()?;
    }
    Ok(())
}

fn error(code: u8, message: String) -> Response {
    Response::Error { message, code }
}

impl DaemonControl {
    async fn bundle_export(&self, request: export::Request, files: Vec<OwnedFd>) -> Response {
        let Some(out) = files.into_iter().next() else {
            return error(exit::USAGE, "no file to write the bundle into".into());
        };
        let site = self.bundles.get();
        if site.router.by_name(&request.route).is_none() {
            return error(exit::USAGE, format!("no route named {:?}", request.route));
        }
        if request.format == export::Format::Bundle
            && site.peers.for_route(&request.route).is_none()
        {
            return error(
                exit::CONFIG,
                format!(
                    "no [[bundle_peer]] takes route {:?}: name it in a peer's routes",
                    request.route
                ),
            );
        }
        let _one = self.bundle_lock.lock().await;
        match export::export(
            &site.spool,
            &self.queue,
            &site.peers,
            request,
            File::from(out),
        )
        .await
        {
            Ok(done) => Response::Exported(done),
            Err(e) => error(exit::IOERR, e),
        }
    }

    async fn bundle_import(&self, files: Vec<OwnedFd>) -> Response {
        let mut files = files.into_iter();
        let Some(input) = files.next() else {
            return error(exit::USAGE, "no bundle to read".into());
        };
        let receipt_out = files.next().map(File::from);
        let site = self.bundles.get();
        let _one = self.bundle_lock.lock().await;
        let want_receipt = receipt_out.is_some();
        let work = tokio::task::spawn_blocking(move || {
            import::import(&site, File::from(input), want_receipt)
        });
        match work.await {
            Ok(Ok(import::Read::Mail(report, receipt))) => {
                if let (Some(bytes), Some(out)) = (receipt, receipt_out) {
                    let written =
                        tokio::task::spawn_blocking(move || write_durably(out, &bytes)).await;
                    if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
                        return error(
                            exit::IOERR,
                            format!(
                                "the mail is imported, but its receipt could not be written: {e}"
                            ),
                        );
                    }
                }
                log_import(&report);
                Response::Imported(report)
            }
            Ok(Ok(import::Read::Receipt(mut report, receipts))) => {
                let node = report.node.clone();
                match receipt::apply(&self.queue, &node, receipts, &mut report).await {
                    Ok(()) => {
                        log_import(&report);
                        Response::Imported(report)
                    }
                    Err(e) => error(exit::TEMPFAIL, e),
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(reason = %e, "bundle refused");
                error(exit::DATAERR, e)
            }
            Err(e) => error(exit::SOFTWARE, format!("import: {e}")),
        }
    }

    /// Reads the index: blocking, so called on a blocking thread.
    fn status(&self) -> Result<Status, ReadError> {
        let layout = self.spool.layout();
        let lanes = self.odmr.lanes();
        let (summary, odmr_waiting) = match IndexReader::open(layout)? {
            Some(reader) => (reader.summary()?, reader.waiting_by_domain(&lanes)?),
            None => Default::default(),
        };
        let (counts, messages, kept) = (summary.by_state, summary.messages, summary.kept);
        let recipients = RecipientState::ALL
            .iter()
            .map(|state| {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                (*state, n)
            })
            .collect();
        let maildrop = self
            .spool
            .fs()
            .list_dir(&layout.maildrop_new)
            .map_or(0, |names| names.len());
        Ok(Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            spool: layout.root.display().to_string(),
            hostname: self.hostname.get().as_ref().clone(),
            listeners: self.listeners.clone(),
            recovery: self.recovery.clone(),
            recipients,
            messages,
            kept,
            maildrop,
            mode: self.link.mode(),
            routes: self.link.status(),
            last_flush: self.link.last_flush(),
            next_flush_at: self.link.next_scheduled(),
            open_domains: self.open_domains.list(),
            odmr: self.odmr.report(odmr_waiting),
        })
    }

    fn progress(&self, domain: Option<&str>) -> Result<FlushProgress, ReadError> {
        let now = now_unix();
        let working = self.progress.changes_pending() > 0;
        let (busy, waiting, waiting_routes) = match IndexReader::open(self.spool.layout())? {
            Some(reader) => {
                let (busy, waiting) = reader.busy_and_waiting(now, domain)?;
                let routes = if busy == 0 && waiting > 0 && !working {
                    reader.waiting_by_route(now, domain)?
                } else {
                    Vec::new()
                };
                (busy, waiting, routes)
            }
            None => (0, 0, Vec::new()),
        };
        Ok(FlushProgress {
            messages_sent: self.progress.messages_sent.load(Ordering::Relaxed),
            bytes_sent: self.progress.bytes_sent.load(Ordering::Relaxed),
            busy,
            waiting,
            waiting_routes,
            active: self.progress.active(),
            working,
        })
    }
}
