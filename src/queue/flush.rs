//! Flush requests, from wherever they come (`ferrymail flush`, `sendmail -q`, SIGUSR1,
//! the trigger file, ETRN): waiting mail is made due now, a hold route's domain is opened
//! when named, and the routes concerned start a run, which their link gates honour in
//! every mode. Requests are coalesced: a run already going is joined, never doubled, and
//! a lane never has two runners.

use std::sync::Arc;

use super::open_domains::OpenDomains;
use crate::delivery::route::Router;
use crate::link::Link;
use crate::spool::{Change, Selection, Spool, SpoolError, now_unix};

/// What a flush asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushTarget {
    All,
    /// One domain; with `subdomains`, those under it too (ETRN `@domain`).
    Domain {
        domain: String,
        subdomains: bool,
    },
}

/// What a flush started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    /// Recipients made due (for a domain) or messages (for the whole queue).
    pub released: usize,
    /// A run for these routes was already going; this request joined it.
    pub coalesced: bool,
}

pub struct Flusher {
    pub spool: Spool,
    pub router: Router,
    pub link: Arc<Link>,
    pub open_domains: Arc<OpenDomains>,
}

impl Flusher {
    pub async fn flush(&self, target: &FlushTarget, why: &str) -> Result<Started, SpoolError> {
        let (released, coalesced) = match target {
            FlushTarget::All => {
                let changed = self.spool.change(Change::Retry(Selection::All)).await?;
                (changed.changed.len(), self.link.flush(None, why))
            }
            FlushTarget::Domain { domain, subdomains } => {
                let route = self.router.route(domain);
                if route.hold {
                    self.open_domains.open(domain, *subdomains);
                }
                let n = self
                    .spool
                    .release_domain(domain, *subdomains, now_unix())
                    .await?;
                (n, self.link.flush(Some(&route.name), why))
            }
        };
        tracing::info!(why, target = ?target, released, coalesced, "flush");
        self.spool.wake_handle().notify_one();
        Ok(Started {
            released,
            coalesced,
        })
    }
}
