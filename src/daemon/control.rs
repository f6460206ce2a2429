//! The daemon's answers to control requests. Queue changes go through the spool writer;
//! status reads the index on a read-only connection.

use crate::control::server::Handler;
use crate::control::{ChangeAction, Request, Response, StateCount, Status};
use crate::exit;
use crate::spool::{Change, RecipientState, RecoveryReport, Selection, Spool, index};

pub struct DaemonControl {
    pub spool: Spool,
    pub hostname: String,
    pub started_at: i64,
    pub recovery: RecoveryReport,
}

impl Handler for DaemonControl {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Request::Status => match self.status() {
                Ok(status) => Response::Status(status),
                Err(e) => error(exit::IOERR, format!("status: {e}")),
            },
            Request::Change { action, ids, all } => {
                let selection = if all {
                    Selection::All
                } else {
                    Selection::Ids(ids)
                };
                let change = match action {
                    ChangeAction::Hold => Change::Hold(selection),
                    ChangeAction::Release => Change::Release(selection),
                    ChangeAction::Delete => Change::Delete(selection),
                };
                match self.spool.change(change).await {
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
            recovery: self.recovery.clone(),
            recipients,
            messages,
            maildrop,
            delivery: "not available in this version".into(),
        })
    }
}
