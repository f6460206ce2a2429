//! Mail without a network: bundles of messages with their whole envelopes, written for
//! a peer node, carried by whatever crosses (a USB stick, UUCP, NNCP), imported there
//! once, and answered with a receipt. The container and its records are here
//! (`format`, `record`); export and import, which go through the queue owner and the
//! spool, are `export` and `import`.

pub mod bsmtp;
pub mod export;
pub mod format;
pub mod import;
pub mod key;
pub mod peers;
pub mod receipt;
pub mod record;
pub mod take;
