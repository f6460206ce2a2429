//! The queue owner's wake list: for each lane with mail waiting for a time, when its
//! first recipient may be due, ordered by that time (a `BTreeSet<(time, lane)>`, the
//! deadline list of a wake loop). It may say a lane is due earlier than it is, never
//! later: whatever could bring a lane's mail forward (a commit, a release, a flush, a
//! delivery ending) brings the lane forward here, and a lane found with nothing due is
//! looked up in the index again. It holds lanes, not recipients: its size follows the
//! number of destinations, never the size of the queue.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct Schedule {
    by_time: BTreeSet<(i64, String)>,
    at: HashMap<String, i64>,
}

impl Schedule {
    /// `lane` is next due at `at`, replacing what was known.
    pub fn set(&mut self, lane: &str, at: i64) {
        if let Some(old) = self.at.insert(lane.to_owned(), at) {
            self.by_time.remove(&(old, lane.to_owned()));
        }
        self.by_time.insert((at, lane.to_owned()));
    }

    /// `lane` may be due as early as `at`.
    pub(crate) fn bring_forward(&mut self, lane: &str, at: i64) {
        match self.at.get(lane) {
            Some(&known) if known <= at => {}
            _ => self.set(lane, at),
        }
    }

    /// Nothing of `lane` waits for a time.
    pub fn remove(&mut self, lane: &str) {
        if let Some(old) = self.at.remove(lane) {
            self.by_time.remove(&(old, lane.to_owned()));
        }
    }

    /// The lanes due by `now`, earliest first.
    pub fn due(&self, now: i64) -> Vec<String> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, lane)| lane.clone())
            .collect()
    }

    #[cfg(test)]
    /// Whether `lane` is due by `now`.
    fn is_due(&self, lane: &str, now: i64) -> bool {
        self.at.get(lane).is_some_and(|at| *at <= now)
    }

    /// When the next lane falls due.
    pub fn next(&self) -> Option<i64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_come_due_in_time_order_and_only_move_forward_when_asked() {
        let mut s = Schedule::default();
        s.set("upstream", 100);
        s.set("mx b.example", 50);
        s.set("mx a.example", 200);
        assert_eq!(s.next(), Some(50));
        assert_eq!(s.due(100), ["mx b.example", "upstream"]);
        s.bring_forward("mx a.example", 10);
        s.bring_forward("upstream", 500);
        assert_eq!(s.due(100), ["mx a.example", "mx b.example", "upstream"]);
        s.set("mx a.example", 300);
        assert!(!s.is_due("mx a.example", 100));
        s.remove("mx b.example");
        assert_eq!(s.due(1000), ["upstream", "mx a.example"]);
        assert_eq!(s.len(), 2);
    }
}
