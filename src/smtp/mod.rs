//! The SMTP protocol and message format, free of sockets and policy: envelope addresses,
//! replies we send and responses we read, command framing and parsing, the DATA and BDAT
//! readers, line-ending canonicalisation, header fields and dates. Nothing here knows about
//! sessions, the spool or the network.

pub mod address;
pub mod bdat;
pub mod canon;
pub mod command;
pub mod cram_md5;
pub mod data;
pub mod date;
pub mod domain;
pub mod fields;
pub mod line;
pub mod line_length;
pub mod params;
pub mod reply;
pub mod response;

pub use address::{AddressError, Mailbox, ReversePath};
pub use command::{Command, CommandError, MailFrom, RcptTo};
pub use params::{BodyType, Notify, NotifyOn, Ret};
pub use reply::Reply;
