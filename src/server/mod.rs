//! The SMTP listener: relay policy, the session state machine, and (next) the connection
//! driver, TLS and AUTH. `smtp/` holds the protocol; this module holds the decisions.

pub mod policy;
pub mod session;

pub use policy::RelayPolicy;
pub use session::{Session, SessionConfig, Step, Transaction};
