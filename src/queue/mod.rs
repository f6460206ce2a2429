//! The queue: its owner, and the queue as people and scripts see it. The owner
//! (`owner`) is the one task that changes recipient state; everyone else talks to it
//! through a `handle`. It places committed mail on lanes (`placement`), claims due mail
//! for lanes' runners (`lane`), records what their deliveries answer (`record`: what
//! results mean is `settle`, the notices they send `notices`), carries out flushes and
//! operator changes a bounded step at a time (`jobs`, `flush`), and wakes by a list of
//! lanes in due order (`schedule`). What it and the runners are configured with, and a
//! reload replaces, is `kit`. The retry policy is `retry`; listing entries and the
//! human table are `listing` and `table`.

mod dispatch;
pub mod flush;
pub mod handle;
pub mod jobs;
pub mod kit;
pub mod lane;
pub mod listing;
pub mod notices;
pub mod open_domains;
pub mod owner;
pub mod placement;
pub mod record;
pub mod reload;
pub mod retry;
pub mod schedule;
pub mod settle;
pub mod table;

pub use crate::spool::reader::{QueueEntry, RecipientEntry};
pub(crate) use listing::maildrop_entries;
