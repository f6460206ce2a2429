//! The wall clock as the queue counts it: whole Unix seconds. Due times, arrival times
//! and gate changes use it; durations that must not jump (online time, timeouts) use
//! the monotonic clock instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
