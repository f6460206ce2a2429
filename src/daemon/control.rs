//! The daemon's answers to control requests. Queue changes and flushes go to the queue
//! owner; status and progress read the index on a read-only connection, and the link
//! gates from memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::control::server::Handler;
use crate::control::{Progress, Request, Response, Status};
use crate::current::Current;
use crate::delivery::runner;
use crate::exit;
use crate::link::Link;
use crate::queue::handle::FlushTarget;
use crate::queue::handle::QueueHandle;
use crate::queue::open_domains::OpenDomains;
use crate::spool::reader::ReadError;
use crate::spool::{IndexReader, RecipientState, RecoveryReport, Spool, now_unix};

#[derive(Clone)]
pub struct DaemonControl {
    pub spool: Spool,
    pub queue: QueueHandle,
    pub link: Arc<Link>,
    pub open_domains: Arc<OpenDomains>,
    pub progress: Arc<runner::Progress>,
    pub hostname: Arc<Current<String>>,
    pub started_at: i64,
    pub recovery: RecoveryReport,
    /// Bound SMTP listener addresses.
    pub listeners: Vec<String>,
    pub odmr: Arc<super::odmr::OdmrState>,
}

impl Handler for DaemonControl {
    async fn handle(&self, request: Request) -> Response {
        match request {
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

fn error(code: u8, message: String) -> Response {
    Response::Error { message, code }
}

impl DaemonControl {
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

    fn progress(&self, domain: Option<&str>) -> Result<Progress, ReadError> {
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
        Ok(Progress {
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
