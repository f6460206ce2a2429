//! Black-box tests of mail going out: the daemon binary delivers to scripted upstreams
//! and MX hosts, records every outcome with its notice, and follows its link.
//!
//! One test binary for this tier (`cargo test --test delivery`); each module is a suite
//! of its own, run alone with `cargo test --test delivery NAME::`.

mod common;
#[path = "delivery/delivery.rs"]
mod delivery;
#[path = "delivery/link.rs"]
mod link;
#[path = "delivery/mx.rs"]
mod mx;
#[path = "delivery/notices.rs"]
mod notices;
#[path = "delivery/queue_core.rs"]
mod queue_core;
