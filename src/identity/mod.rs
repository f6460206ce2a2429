//! Who mail is for and who it is from, as this host sees it: local names, their aliases
//! and the admin address (`local`, `aliases`). Pure: the configuration in, decisions
//! out; the parts that commit mail apply them.

pub mod aliases;
pub mod local;

pub use local::{LocalMail, LocalNames};
