//! The SMTP protocol, free of sockets and policy. For now: envelope addresses and
//! line-ending canonicalisation; the command parser, replies and the DATA/BDAT readers
//! join with the listener.

pub mod address;
pub mod canon;

pub use address::{AddressError, Mailbox, ReversePath};
