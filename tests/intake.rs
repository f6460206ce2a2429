//! Black-box tests of mail coming in: the daemon binary takes mail over SMTP (durable,
//! huge, out of descriptors, text outside the message) and from the sendmail command,
//! resolves local names and users, rewrites senders, and signs with DKIM.
//!
//! One test binary for this tier (`cargo test --test intake`); each module is a suite
//! of its own, run alone with `cargo test --test intake NAME::`.

mod common;
#[path = "intake/dkim.rs"]
mod dkim;
#[path = "intake/injection.rs"]
mod injection;
#[path = "intake/local_names.rs"]
mod local_names;
#[path = "intake/local_users.rs"]
mod local_users;
#[path = "intake/outside_text.rs"]
mod outside_text;
#[path = "intake/sender_rewrite.rs"]
mod sender_rewrite;
#[path = "intake/smtp_durability.rs"]
mod smtp_durability;
#[path = "intake/smtp_emfile.rs"]
mod smtp_emfile;
#[path = "intake/smtp_huge.rs"]
mod smtp_huge;
