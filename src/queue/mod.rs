//! The queue: as people and scripts see it (listing entries streamed from the index,
//! never the whole queue in memory; drops still waiting in the maildrop; the human
//! table), and its owner: the scheduler's wake loop, lanes that each run one
//! connection, the retry policy, what results mean (`settle`) and the notices they send.
//! Changes to the queue go through the spool writer (`spool::Change`).

pub mod flush;
pub mod lane;
pub mod listing;
pub mod notices;
pub mod open_domains;
pub mod retry;
pub mod scheduler;
pub mod settle;
pub mod table;

pub use listing::{QueueEntry, RecipientEntry, for_each_entry, maildrop_entries};
