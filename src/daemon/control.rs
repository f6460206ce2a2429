//! The daemon's answers to control requests. Queue changes go through the spool writer;
//! status reads the index on a read-only connection.

use std::sync::Arc;

use crate::control::server::Handler;
use crate::control::{Request, Response, StateCount, Status};
use crate::exit;
use crate::queue::scheduler::OpenDomains;
use crate::spool::{Change, RecipientState, RecoveryReport, Selection, Spool, index};

#[derive(Clone)]
pub struct DaemonControl {
    pub spool: Spool,
    /// Held domains a flush has opened (shared with the scheduler).
    pub open_domains: Arc<OpenDomains>,
    pub hostname: String,
    pub started_at: i64,
    pub recovery: RecoveryReport,
    /// Bound SMTP listener addresses.
    pub listeners: Vec<String>,
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
                    Ok(Ok(status)) => Response::Status(status),
                    Ok(Err(e)) => error(exit::IOERR, format!("status: {e}")),
                    Err(e) => error(exit::SOFTWARE, format!("status: {e}")),
                }
            }
            Request::Change { action, ids, all } => {
                match self.spool.change(action.change(ids, all)).await {
                    Ok(outcome) => Response::Changed(outcome),
                    Err(e) => error(exit::TEMPFAIL, e.to_string()),
                }
            }
            Request::Flush { domain } => {
                // Like `postqueue -f`: whatever waits is tried now, not at its next attempt.
                let now = crate::spool::now_unix();
                let released = match &domain {
                    Some(d) => {
                        self.open_domains.open(d, false);
                        self.spool.release_domain(d, false, now).await
                    }
                    None => self
                        .spool
                        .change(Change::Retry(Selection::All))
                        .await
                        .map(|o| o.changed.len()),
                };
                let released = match released {
                    Ok(n) => n,
                    Err(e) => return error(exit::TEMPFAIL, e.to_string()),
                };
                tracing::info!(
                    domain = domain.as_deref().unwrap_or("(all)"),
                    due_now = released,
                    "flush requested"
                );
                self.spool.wake_handle().notify_one();
                Response::FlushStarted { released }
            }
        }
    }
}

fn error(code: u8, message: String) -> Response {
    Response::Error { message, code }
}

impl DaemonControl {
    /// Reads the index: blocking, so called on a blocking thread.
    fn status(&self) -> rusqlite::Result<Status> {
        let layout = self.spool.layout();
        let conn = index::open_reader(&layout.index)?;
        let (counts, messages) = match &conn {
            Some(conn) => (
                index::count_by_state(conn)?,
                conn.query_row("SELECT COUNT(*) FROM message", [], |r| r.get(0))?,
            ),
            None => (Vec::new(), 0),
        };
        let recipients = RecipientState::ALL
            .iter()
            .map(|state| StateCount {
                state: *state,
                count: counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n),
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
            hostname: self.hostname.clone(),
            listeners: self.listeners.clone(),
            recovery: self.recovery.clone(),
            recipients,
            messages,
            maildrop,
            delivery: "relay routes ([upstream], route via); direct MX is not in this version"
                .into(),
        })
    }
}
