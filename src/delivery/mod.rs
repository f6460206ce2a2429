//! Delivery (DESIGN §5): routes, the SMTP client (one transaction, or a batch pipelined
//! across messages), the one classification of results, a delivery run for a relaying
//! route, and delivery status notifications. `queue::scheduler` drives it. Direct MX
//! resolution is not here yet.

pub mod batch;
pub mod client;
pub mod dsn;
pub mod encode;
pub mod outcome;
pub mod route;
pub mod runner;
pub mod settings;
