//! The queue as people and scripts see it: listing entries streamed from the index
//! (never the whole queue in memory), drops still waiting in the maildrop, and the
//! human table. Changes to the queue go through the spool writer (`spool::Change`).

pub mod listing;
pub mod retry;
pub mod scheduler;
pub mod table;

pub use listing::{QueueEntry, RecipientEntry, for_each_entry, maildrop_entries};
