//! The control socket (`<spool>/control.sock`): one JSON request per line, one JSON reply
//! per line. Anyone who can reach the socket may ask for status or a flush; changing the
//! queue (hold, release, delete) needs the daemon's uid or root, checked by SO_PEERCRED.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::spool::{Change, ChangeOutcome, QueueId, RecipientState, RecoveryReport, Selection};

/// Longest request line the daemon reads.
pub const MAX_REQUEST_LINE: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Status,
    /// Hold, release or delete messages; `ids` empty with `all` for every message.
    Change {
        action: ChangeAction,
        #[serde(default)]
        ids: Vec<QueueId>,
        #[serde(default)]
        all: bool,
    },
    /// Deliver what is due (for one domain, or all).
    Flush {
        #[serde(default)]
        domain: Option<String>,
    },
}

impl Request {
    /// Requests that change the queue need a privileged peer.
    pub fn is_privileged(&self) -> bool {
        matches!(self, Request::Change { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    Hold,
    Release,
    Retry,
    Delete,
}

impl ChangeAction {
    /// The spool change this action makes to `ids`, or to every message when `all`.
    pub fn change(self, ids: Vec<QueueId>, all: bool) -> Change {
        let selection = if all {
            Selection::All
        } else {
            Selection::Ids(ids)
        };
        match self {
            ChangeAction::Hold => Change::Hold(selection),
            ChangeAction::Release => Change::Release(selection),
            ChangeAction::Retry => Change::Retry(selection),
            ChangeAction::Delete => Change::Delete(selection),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Pong {
        pid: u32,
        version: String,
    },
    Status(Status),
    Changed(ChangeOutcome),
    /// The queue owner was woken; `released` counts what was made due first (recipients
    /// for `--domain`, messages for a whole-queue flush).
    FlushStarted {
        released: usize,
    },
    /// The request could not be done; `code` is the sysexits code the CLI should use.
    Error {
        message: String,
        code: u8,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    /// Unix seconds.
    pub started_at: i64,
    pub spool: String,
    pub hostname: String,
    /// SMTP listener addresses, as bound.
    pub listeners: Vec<String>,
    /// What recovery found at start-up.
    pub recovery: RecoveryReport,
    /// Recipients by state (every state listed, zeros included).
    pub recipients: Vec<StateCount>,
    pub messages: i64,
    /// Drops in `maildrop/new` not yet picked up.
    pub maildrop: usize,
    /// Whether this build can deliver (it cannot yet: no delivery module).
    pub delivery: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    pub state: RecipientState,
    pub count: i64,
}
