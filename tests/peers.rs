//! Black-box tests of two ferrymail nodes: bundles carried between them, and ODMR from
//! station to hub.
//!
//! One test binary for this tier (`cargo test --test peers`); each module is a suite
//! of its own, run alone with `cargo test --test peers NAME::`.

#[path = "peers/bundles.rs"]
mod bundles;
mod common;
#[path = "peers/odmr.rs"]
mod odmr;
