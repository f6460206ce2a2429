//! The daemon's answers to control requests. Queue changes go through the spool writer;
//! status reads the index on a read-only connection.

use crate::control::server::Handler;
use crate::control::{Request, Response, StateCount, Status};
use crate::exit;
use crate::spool::{RecipientState, RecoveryReport, Spool, index};

#[derive(Clone)]
pub struct DaemonControl {
    pub spool: Spool,
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
            Request::Flush { .. } => error(
                exit::UNAVAILABLE,
                "this ferrymail cannot deliver yet (no delivery module); mail stays queued".into(),
            ),
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
            delivery: "not available in this version".into(),
        })
    }
}
