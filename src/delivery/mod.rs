//! Delivery (DESIGN §5), being built: route selection, the SMTP client, the one
//! classification of results, and delivery status notifications. The queue owner that
//! drives them and MX resolution come next: the daemon does not deliver yet.

pub mod client;
pub mod dsn;
pub mod outcome;
pub mod route;
pub mod runner;
pub mod settings;
