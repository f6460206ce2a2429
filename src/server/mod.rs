//! The SMTP listener: relay policy, the session state machine, the connection driver
//! (with its queue of replies, some waiting for commits), the accept loop, and the
//! intake of content into the spool. `smtp/` holds the
//! protocol; this module holds the decisions and the I/O.

pub mod auth;
mod bdat_in;
pub mod conn;
mod conn_bdat;
pub mod etrn;
pub mod intake;
pub mod listener;
mod odmr;
pub mod policy;
pub mod received;
mod replies;
mod sasl;
pub mod session;
pub mod stream;
pub mod tls;
pub mod turns;

pub use conn::{AuthContext, ServerContext, ServerStats, Timeouts};
pub use listener::{ConnectionLimits, serve};
pub use policy::RelayPolicy;
pub use session::{Session, SessionConfig, Step, Transaction};
pub use tls::ServerTls;
