//! The pipelining window: how many transactions a batch may have answered or on the
//! wire whose outcomes are not yet durably recorded. On a short path it follows the
//! path, measured as the replies come: the shortest time a transaction took to be
//! answered once written (the round trip, unloaded) and the rate at which answers
//! arrive. Keeping `2 × rate × round trip` in flight fills the link and no more. On a
//! path the link fit paces (`link_fit`), the bytes on the link are its business, and
//! the window is whole. What is in flight is what a crash can repeat, so it is bounded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far the writer may run ahead of what is recorded: at most this many
/// transactions, and this many bytes, whose outcomes are not yet durable. That is what a
/// crash can repeat (the upstream commits what it has read after we die), so the window
/// is bounded, and kept near what the link needs: twice the messages answered per round
/// trip, measured as the replies come (`Window`), so a fast path keeps a few in flight
/// while a long thin one keeps enough to stay busy. 1 MiB fills 600 ms at 13 Mbit/s;
/// 32 messages of the 1.5 KiB a typical letter compresses to (XZSTD) are less than
/// 600 ms at 1 Mbit/s carries, so compressed mail needs the 64.
pub const WINDOW_MESSAGES: usize = 64;
pub const WINDOW_BYTES: usize = 1 << 20;
/// The smallest window: one transaction being answered while the next is on its way.
pub const MIN_WINDOW: usize = 8;

/// The pipelining window's measure of the path: the shortest time a transaction took to
/// be answered once written (the round trip, unloaded), and the rate at which answers
/// come. Keeping `2 × rate × round trip` in flight fills the link and no more.
pub struct Window {
    written: VecDeque<Instant>,
    answers: VecDeque<Instant>,
    rtt: Duration,
    /// The link fit paces the writes: the window is whole. Counted in transactions, it
    /// is a poor measure of a link's load when sizes vary: after a large attachment
    /// the answers come slowly, the window shrank to 14, and the small letters behind
    /// it left a fifth of a 1 Mbit/s, 600 ms link idle.
    paced: bool,
}

impl Window {
    /// Recent answers the rate is taken over.
    const RATE_SPAN: usize = 8;
    /// A round trip this long is a long thin link: start with the whole window, as
    /// waiting to measure it would cost round trips there; a shorter path starts small.
    const LONG_PATH: Duration = Duration::from_millis(200);
    const START: usize = 8;

    /// For a connection whose round trip (EHLO's) was `rtt`; `paced` where the link fit
    /// holds the writer to the link.
    pub fn new(rtt: Duration, paced: bool) -> Window {
        Window {
            written: VecDeque::new(),
            answers: VecDeque::new(),
            rtt,
            paced,
        }
    }

    pub fn written(&mut self, at: Instant) {
        self.written.push_back(at);
    }

    pub fn answered(&mut self, at: Instant) {
        if let Some(sent) = self.written.pop_front() {
            let took = at.saturating_duration_since(sent);
            if self.rtt.is_zero() || took < self.rtt {
                self.rtt = took;
            }
        }
        self.answers.push_back(at);
        if self.answers.len() > Self::RATE_SPAN {
            self.answers.pop_front();
        }
    }

    /// Transactions that may be unanswered now.
    pub fn limit(&self) -> usize {
        if self.paced {
            return WINDOW_MESSAGES;
        }
        let (Some(first), Some(last)) = (self.answers.front(), self.answers.back()) else {
            return self.start();
        };
        if self.answers.len() < 3 {
            return self.start();
        }
        let span = last
            .saturating_duration_since(*first)
            .as_secs_f64()
            .max(1e-6);
        let rate = (self.answers.len() - 1) as f64 / span;
        let needed = (2.0 * rate * self.rtt.as_secs_f64()).ceil() as usize + 1;
        needed.clamp(MIN_WINDOW, WINDOW_MESSAGES)
    }

    fn start(&self) -> usize {
        if self.rtt >= Self::LONG_PATH {
            WINDOW_MESSAGES
        } else {
            Self::START
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(rtt_ms: u64, every_ms: u64, n: u64) -> usize {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_millis(rtt_ms), false);
        for i in 0..n {
            w.written(start + Duration::from_millis(i * every_ms));
        }
        for i in 0..n {
            w.answered(start + Duration::from_millis(i * every_ms + rtt_ms));
        }
        w.limit()
    }

    #[test]
    fn the_window_follows_the_path() {
        assert_eq!(
            Window::new(Duration::ZERO, false).limit(),
            Window::START,
            "unmeasured: start small"
        );
        assert_eq!(
            Window::new(Duration::from_millis(600), false).limit(),
            WINDOW_MESSAGES,
            "a long round trip starts wide"
        );
        // Loopback: answers a millisecond apart, a tenth of one to come back.
        assert_eq!(feed(0, 1, 20), MIN_WINDOW);
        // 600 ms round trip, a 4 KiB message every 33 ms at 1 Mbit/s: 2 × 30 × 0.6 + 1.
        assert_eq!(feed(600, 33, 20), 38);
        // Compressed, one every 10 ms: 2 × 100 × 0.6 = 120, capped.
        assert_eq!(feed(600, 10, 20), WINDOW_MESSAGES);
        // 100 ms round trip, one every 20 ms: 2 × 50 × 0.1 + 1 = 11.
        assert_eq!(feed(100, 20, 20), 11);
    }

    #[test]
    fn a_paced_window_stays_whole_however_slowly_answers_come() {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_millis(600), true);
        for i in 0..20 {
            // One answer every half second: a large attachment's pace.
            w.written(start + Duration::from_millis(i * 500));
            w.answered(start + Duration::from_millis(i * 500 + 600));
        }
        assert_eq!(w.limit(), WINDOW_MESSAGES);
    }
}
