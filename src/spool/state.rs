//! Per-recipient states (spool/README.md). These names are the one spelling used in the
//! index's CHECK constraint, CLI output, JSON and logs.

use std::fmt;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// Waiting for its first or next attempt, due at `next_attempt_at`.
    Queued,
    /// Claimed by a delivery in progress.
    InFlight,
    /// Failed temporarily; due again at `next_attempt_at`.
    Deferred,
    /// Kept until released (by the operator, or a flush naming its domain).
    Held,
    /// Written into a bundle; delivered when the peer's receipt says so, or back to the
    /// queue after `bundle.resend_after` without one.
    Bundled,
    Delivered,
    Bounced,
    Expired,
}

impl RecipientState {
    pub const ALL: [RecipientState; 8] = [
        RecipientState::Queued,
        RecipientState::InFlight,
        RecipientState::Deferred,
        RecipientState::Held,
        RecipientState::Bundled,
        RecipientState::Delivered,
        RecipientState::Bounced,
        RecipientState::Expired,
    ];

    /// States that still need something from us.
    pub const PENDING: [RecipientState; 5] = [
        RecipientState::Queued,
        RecipientState::InFlight,
        RecipientState::Deferred,
        RecipientState::Held,
        RecipientState::Bundled,
    ];

    /// The final states.
    pub const FINAL: [RecipientState; 3] = [
        RecipientState::Delivered,
        RecipientState::Bounced,
        RecipientState::Expired,
    ];

    /// `'a','b'` for an SQL `IN (…)` list (the names are fixed words, never input).
    pub(crate) fn sql_list<const N: usize>(states: [RecipientState; N]) -> String {
        states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Queued => "queued",
            RecipientState::InFlight => "in_flight",
            RecipientState::Deferred => "deferred",
            RecipientState::Held => "held",
            RecipientState::Bundled => "bundled",
            RecipientState::Delivered => "delivered",
            RecipientState::Bounced => "bounced",
            RecipientState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<RecipientState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Final states: the recipient needs nothing more from us.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            RecipientState::Delivered | RecipientState::Bounced | RecipientState::Expired
        )
    }
}

impl fmt::Display for RecipientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read from the index's `state` column; a name the CHECK constraint would refuse is an
/// error, never a guess.
impl rusqlite::types::FromSql for RecipientState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        RecipientState::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("unknown recipient state {text:?}").into())
        })
    }
}
