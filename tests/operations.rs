//! Black-box tests of running the daemon: its lifecycle, configuration, control socket,
//! systemd, metrics, reload, and the README's own examples.
//!
//! One test binary for this tier (`cargo test --test operations`); each module is a suite
//! of its own, run alone with `cargo test --test operations NAME::`.

mod common;
#[path = "operations/config.rs"]
mod config;
#[path = "operations/control_socket.rs"]
mod control_socket;
#[path = "operations/daemon.rs"]
mod daemon;
#[path = "operations/metrics.rs"]
mod metrics;
#[path = "operations/readme_examples.rs"]
mod readme_examples;
#[path = "operations/reload.rs"]
mod reload;
#[path = "operations/systemd.rs"]
mod systemd;
