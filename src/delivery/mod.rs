//! Delivery (DESIGN §5): routes, MX resolution, opening connections (relay or MX, with
//! loop checks), the SMTP client (one transaction, or a batch pipelined across
//! messages), the one classification of results, a delivery run over an open
//! connection, and delivery status notifications. `queue::scheduler` drives it.

pub mod batch;
pub mod client;
pub mod connect;
pub mod dsn;
pub mod encode;
pub mod mx;
pub mod opportunistic;
pub mod outcome;
pub mod route;
pub mod runner;
pub mod settings;
