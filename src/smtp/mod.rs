//! The SMTP protocol, free of sockets and policy: envelope addresses, replies, command
//! framing and parsing, the DATA and BDAT readers, and line-ending canonicalisation.
//! Nothing here knows about sessions, the spool or the network.

pub mod address;
pub mod bdat;
pub mod canon;
pub mod command;
pub mod data;
pub mod line;
pub mod reply;
pub mod response;

pub use address::{AddressError, Mailbox, ReversePath};
pub use command::{Command, CommandError, MailFrom, RcptTo};
pub use reply::Reply;
