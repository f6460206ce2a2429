//! The control socket (`<spool>/control.sock`): one JSON request per line, one JSON reply
//! per line. Anyone who can reach the socket may ask for status or a flush; changing the
//! queue (hold, release, delete) needs the daemon's uid or root, checked by SO_PEERCRED.

pub mod client;
pub mod files;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::config::LinkMode;
use crate::link::{FlushRecord, RouteStatus};
use crate::queue::jobs::{Change, ChangeOutcome};
use crate::spool::reader::WaitingRoute;
use crate::spool::{QueueId, RecipientState, RecoveryReport, Scope};

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
    /// How delivery is going, for `flush --wait` (of one domain's mail, when given).
    Progress {
        #[serde(default)]
        domain: Option<String>,
    },
    /// Write `route`'s waiting mail into the file sent after `SendFiles`.
    BundleExport {
        route: String,
        format: crate::bundle::export::Format,
        #[serde(default)]
        max_bytes: Option<u64>,
    },
    /// Read the bundle or receipt in the file sent after `SendFiles`; with `receipt`,
    /// a second file takes the receipt.
    BundleImport {
        #[serde(default)]
        receipt: bool,
    },
}

impl Request {
    /// Requests that change the queue need a privileged peer.
    pub(crate) fn is_privileged(&self) -> bool {
        matches!(
            self,
            Request::Change { .. } | Request::BundleExport { .. } | Request::BundleImport { .. }
        )
    }

    /// How many open files the request hands over (`files`).
    pub fn files(&self) -> usize {
        match self {
            Request::BundleExport { .. } => 1,
            Request::BundleImport { receipt } => 1 + usize::from(*receipt),
            _ => 0,
        }
    }

    /// Every field is what it claims to be: a domain is a domain (RFC 1035 §2.3.4: at
    /// most 255 octets), a change names messages or all of them.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Request::Flush {
                domain: Some(domain),
            }
            | Request::Progress {
                domain: Some(domain),
            } if !crate::smtp::domain::is_domain(domain) => Err(format!(
                "{:?} is not a domain",
                domain.chars().take(80).collect::<String>()
            )),
            Request::Change { ids, all: true, .. } if !ids.is_empty() => {
                Err("name messages or all of them, not both".into())
            }
            Request::Change {
                ids, all: false, ..
            } if ids.is_empty() => Err("no message named".into()),
            _ => Ok(()),
        }
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
        let selection = if all { Scope::All } else { Scope::Ids(ids) };
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
    Status(Box<Status>),
    Changed(ChangeOutcome),
    /// The flush started; `released` counts the domain's waiting recipients (0 for the
    /// whole queue, which is not counted); `coalesced` says a run was already going and
    /// this flush joined it.
    FlushStarted {
        released: usize,
        #[serde(default)]
        coalesced: bool,
    },
    Progress(FlushProgress),
    /// Send this many open files now (`files`), then wait for the answer.
    SendFiles {
        count: usize,
    },
    Exported(crate::bundle::export::Exported),
    Imported(crate::bundle::import::Imported),
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
    pub recipients: std::collections::BTreeMap<RecipientState, i64>,
    pub messages: i64,
    /// Failed notices kept for the operator (double bounces).
    #[serde(default)]
    pub kept: i64,
    /// Drops in `maildrop/new` not yet picked up.
    pub maildrop: usize,
    /// `link.mode`: auto, schedule or manual.
    pub mode: LinkMode,
    /// Each route's link gate.
    pub routes: Vec<RouteStatus>,
    pub last_flush: Option<FlushRecord>,
    /// When the schedule next starts delivery (schedule mode), Unix seconds.
    pub next_flush_at: Option<i64>,
    /// Held domains that ETRN or a flush opened, until when.
    #[serde(default)]
    pub open_domains: Vec<crate::queue::open_domains::OpenDomain>,
    /// Domains held for ODMR stations: what waits, and their turns.
    #[serde(default)]
    pub odmr: Vec<OdmrDomain>,
}

/// A domain held for an ODMR station (RFC 2645).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OdmrDomain {
    pub domain: String,
    /// Recipients waiting for the next turn.
    pub waiting: i64,
    /// The last turn's start, Unix seconds (since the daemon started).
    pub last_turn: Option<i64>,
    /// The station that took it last.
    pub station: Option<String>,
    /// Recipients its turns delivered since the daemon started.
    pub moved: u64,
}

/// Delivery totals since the daemon started, and what is left.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushProgress {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Recipients due now or in flight.
    pub busy: i64,
    /// Recipients still waiting: deferred to a later time, or waiting for their link.
    pub waiting: i64,
    /// Once nothing is busy: the waiting recipients by route, with the last reason.
    #[serde(default)]
    pub waiting_routes: Vec<WaitingRoute>,
    /// Connections delivering now (`route`, or `route (domain)` for MX).
    pub active: Vec<String>,
    /// The queue owner is still making mail due (a flush's releases): wait on.
    #[serde(default)]
    pub working: bool,
}
