//! In-process tests: the library with our own SMTP listener or client running in this
//! process, a real spool, and no daemon binary: the client against hostile and well-
//! behaved upstreams, XFERRY between two of our nodes, the listener under TLS and
//! faults, the golden SMTP transcripts, and power cuts on the simulated file system.
//!
//! One test binary for this tier (`cargo test --test in_process`); each module is a suite
//! of its own, run alone with `cargo test --test in_process NAME::`.

mod common;
#[path = "in_process/delivery_client.rs"]
mod delivery_client;
#[path = "in_process/delivery_hostile.rs"]
mod delivery_hostile;
#[path = "in_process/ferry.rs"]
mod ferry;
#[path = "in_process/power_cut.rs"]
mod power_cut;
#[path = "in_process/smtp_faults.rs"]
mod smtp_faults;
#[path = "in_process/smtp_tls.rs"]
mod smtp_tls;
#[path = "in_process/transcripts.rs"]
mod transcripts;
