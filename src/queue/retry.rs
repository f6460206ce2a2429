//! When to try again, and when to give up: a pure function of the attempts made, tested
//! as a table. The delay doubles from `retry.initial` up to `retry.max`; jitter (a number
//! in [0, 1) from the caller) spreads it by ±10% so a backlog does not retry in step.
//! Expiry compares the *online* age (time queued while the link was up, README, "Intermittent links",
//! measured by the queue owner) with `retry.expire_after`.

use std::time::Duration;

use crate::config::Retry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub expire_after: Duration,
    pub warn_after: Duration,
}

impl RetryPolicy {
    pub fn from_config(r: &Retry) -> RetryPolicy {
        RetryPolicy {
            initial: r.initial.0,
            max: r.max.0,
            expire_after: r.expire_after.0,
            warn_after: r.warn_after.0,
        }
    }

    /// The wait before the next attempt after `attempts` failed ones (at least 1).
    pub(crate) fn next_delay(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        let base = self
            .initial
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        let factor = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
        base.mul_f64(factor).min(self.max)
    }

    /// Queued long enough, counting only time the link was up, to bounce.
    pub fn expired(&self, online_age: Duration) -> bool {
        online_age >= self.expire_after
    }

    /// Time for a delay notice (`warn_after` of zero: never).
    pub(crate) fn warn_due(&self, online_age: Duration) -> bool {
        !self.warn_after.is_zero() && online_age >= self.warn_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(300),
            max: Duration::from_secs(4 * 3600),
            expire_after: Duration::from_secs(5 * 86400),
            warn_after: Duration::from_secs(4 * 3600),
        }
    }

    #[test]
    fn backoff_table() {
        let p = policy();
        let mins = |m: u64| Duration::from_secs(m * 60);
        for (attempts, jitter, want) in [
            (1, 0.5, mins(5)),
            (2, 0.5, mins(10)),
            (3, 0.5, mins(20)),
            (4, 0.5, mins(40)),
            (5, 0.5, mins(80)),
            (6, 0.5, mins(160)),
            (7, 0.5, mins(240)),
            (100, 0.5, mins(240)),
            (u32::MAX, 0.5, mins(240)),
            (0, 0.5, mins(5)),
            (1, 0.0, Duration::from_secs(270)),
            (1, 1.0, Duration::from_secs(330)),
            (7, 1.0, mins(240)),
            (7, 0.0, mins(216)),
        ] {
            assert_eq!(
                p.next_delay(attempts, jitter),
                want,
                "attempts {attempts}, jitter {jitter}"
            );
        }
    }

    #[test]
    fn expiry_and_warning_count_online_age() {
        let p = policy();
        assert!(!p.expired(Duration::from_secs(5 * 86400 - 1)));
        assert!(p.expired(Duration::from_secs(5 * 86400)));
        assert!(!p.warn_due(Duration::from_secs(3600)));
        assert!(p.warn_due(Duration::from_secs(4 * 3600)));
        let never = RetryPolicy {
            warn_after: Duration::ZERO,
            ..p
        };
        assert!(!never.warn_due(Duration::from_secs(86400 * 30)));
    }
}
