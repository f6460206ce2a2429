//! Delivery (README, "Delivering mail"): routes, MX resolution, opening connections (relay or MX, with
//! loop checks), the SMTP client (one transaction, or a batch pipelined across
//! messages, its content in memory or streamed from the spool), the one classification
//! of results, a delivery run over an open connection that hands each answer to a
//! recorder, and delivery status notifications. The queue owner (`queue`) drives it and
//! records what it answers; nothing here writes recipient state.

pub mod batch;
pub mod client;
pub mod connect;
pub mod content;
pub mod dsn;
pub mod encode;
mod ferry_send;
pub mod link_fit;
pub mod mx;
pub mod opening;
pub mod opportunistic;
pub mod outcome;
mod pipeline;
pub mod route;
pub mod runner;
pub mod settings;
pub mod window;
