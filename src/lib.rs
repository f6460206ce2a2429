//! ferrymail: a store-and-forward SMTP relay for intermittent links.
//!
//! Module map (README, "Layout of the source"):
//! - `config`  — the TOML configuration: schema, defaults, validation, one-line errors.
//! - `smtp`    — the SMTP protocol without sockets or policy: addresses, replies, command
//!   framing and parsing, DATA and BDAT readers.
//! - `server`  — the SMTP listener's decisions: relay policy, the session state machine.
//! - `spool`   — the crash-safe on-disk queue: drafts, group commit, SQLite index,
//!   recovery, maildrop, lock.
//! - `queue`   — the queue for people and scripts (listing, JSON); the retry policy and
//!   the scheduler that owns delivery.
//! - `delivery` — routes, MX resolution, the SMTP client, outcome classification, DSNs.
//! - `link`    — the per-route link gates, probes, schedule windows, network hints, the
//!   ETRN client, and the online-time clocks that expiry counts.
//! - `inject`  — turning a `sendmail` invocation's input into a maildrop message.
//! - `ferry`   — XFERRY, our extension between two ferrymail nodes: zstd-compressed
//!   BDAT content and resumable transfers (docs/xferry.md).
//! - `hex`     — lower-case hexadecimal for digests and keys.
//! - `net`     — TCP streams that switch to TLS in place (server and client).
//! - `metrics` — Prometheus counters and gauges, and the tiny HTTP endpoint serving them.
//! - `control` — the unix-socket protocol between the CLI and the daemon.
//! - `daemon`  — `ferrymail serve`: the long-running tasks and their shutdown.
//! - `cli`     — one file per subcommand; thin over the modules above.
//! - `watch`   — file-system change notifications (the maildrop, the trigger file).
//! - `exit`    — sysexits codes, the one error type the binary turns into an exit code.
//! - `clock`   — the wall clock in Unix seconds, as due times count it.
//! - `current` — a value that a configuration reload replaces under its readers.
//! - `printable` — outside text made safe for terminals and logs.

pub mod batch;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod current;
pub mod daemon;
pub mod delivery;
pub mod dkim;
pub mod exit;
pub mod ferry;
pub mod hex;
pub mod identity;
pub mod inject;
pub mod link;
pub mod metrics;
pub mod net;
pub mod printable;
pub mod queue;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod watch;
