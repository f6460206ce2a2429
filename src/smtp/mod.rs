//! The SMTP protocol, free of sockets and policy. For now: envelope addresses; the
//! command parser, replies and the DATA/BDAT readers join in the listener's issue.

pub mod address;

pub use address::{AddressError, Mailbox, ReversePath};
