//! Flush requests, from wherever they come (`ferrymail flush`, `sendmail -q`, SIGUSR1,
//! the trigger file, ETRN, `every`): what they ask for and what they started. The queue
//! owner carries them out: the routes concerned start a run, which their link gates
//! honour in every mode; waiting mail in scope is made due now; a hold route's domain
//! is opened when named. A flush naming a domain moves that domain's mail only.
//! Requests are coalesced: a run already going is joined, never doubled.

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

/// What a flush started. It answers at once: the mail it names becomes due a bounded
/// step at a time after the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// For a domain: its recipients waiting (held, queued or deferred), now on their way.
    /// For the whole queue: not counted (0).
    pub released: usize,
    /// A run for these routes was already going; this request joined it.
    pub coalesced: bool,
}
