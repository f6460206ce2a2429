//! `link.mode = "schedule"`: windows of local wall-clock time (`"HH:MM-HH:MM"`, may cross
//! midnight) during which delivery may run, and `every`, a period at which a run starts
//! and drains what is due. Wall-clock minutes decide, so across a DST change a window
//! follows the clock on the wall: on the night the clocks go back, 02:00-03:00 lasts
//! two hours; on the night they go forward it does not happen.

use std::time::Duration;

use jiff::ZonedDateTime;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::config::parse_window;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// `(start, end)` in minutes after local midnight.
    windows: Vec<(u16, u16)>,
    pub every: Option<Duration>,
}

impl Schedule {
    /// From `link.windows` (already validated) and `link.every`.
    pub fn new(windows: &[String], every: Option<Duration>) -> Schedule {
        Schedule {
            windows: windows.iter().filter_map(|w| parse_window(w)).collect(),
            every,
        }
    }

    pub fn has_windows(&self) -> bool {
        !self.windows.is_empty()
    }

    /// `minute` (after local midnight) is inside a window.
    fn in_window(&self, minute: u16) -> bool {
        self.windows.iter().any(|&(start, end)| {
            if start < end {
                (start..end).contains(&minute)
            } else {
                minute >= start || minute < end
            }
        })
    }

    /// Whether a window is open at `t` (by its wall clock).
    pub(crate) fn open_at(&self, t: &ZonedDateTime) -> bool {
        self.in_window(t.hour() as u16 * 60 + t.minute() as u16)
    }

    /// The next instant after `t` at which a window opens or closes.
    pub(crate) fn next_boundary(&self, t: &ZonedDateTime) -> Option<ZonedDateTime> {
        let tz = t.time_zone().clone();
        let today = t.date();
        let mut best: Option<ZonedDateTime> = None;
        for day in 0..=2 {
            let Some(date) = add_days(today, day) else {
                continue;
            };
            for &(start, end) in &self.windows {
                for minute in [start, end] {
                    let Some(at) = at_minute(date, minute, &tz) else {
                        continue;
                    };
                    if at.timestamp() > t.timestamp()
                        && best.as_ref().is_none_or(|b| at.timestamp() < b.timestamp())
                    {
                        best = Some(at);
                    }
                }
            }
        }
        best
    }
}

fn add_days(d: Date, n: i64) -> Option<Date> {
    d.checked_add(jiff::Span::new().days(n)).ok()
}

/// `minute` after midnight of `date` in `tz`; a time skipped by DST resolves to the
/// instant the clock jumps to.
fn at_minute(date: Date, minute: u16, tz: &TimeZone) -> Option<ZonedDateTime> {
    date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0)
        .to_zoned_datetime(tz.clone())
        .ok()
}

/// The local time zone, or UTC when the system has none.
pub(crate) fn local_zone() -> TimeZone {
    TimeZone::try_system().unwrap_or(TimeZone::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(w: &[&str]) -> Schedule {
        Schedule::new(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None)
    }

    #[test]
    fn windows_and_midnight() {
        let s = schedule(&["02:00-05:00", "22:30-00:15"]);
        for (minute, open) in [
            (0, true),
            (14, true),
            (15, false),
            (119, false),
            (120, true),
            (299, true),
            (300, false),
            (1349, false),
            (1350, true),
            (1439, true),
        ] {
            assert_eq!(s.in_window(minute), open, "minute {minute}");
        }
        assert!(!schedule(&[]).in_window(600));
    }

    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn zoned(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> ZonedDateTime {
        jiff::civil::date(y, mo, d)
            .at(h, mi, 0, 0)
            .to_zoned_datetime(berlin())
            .unwrap()
    }

    #[test]
    fn next_boundaries_cross_midnight() {
        let s = schedule(&["22:30-01:15"]);
        let t = zoned(2026, 6, 10, 12, 0);
        let next = s.next_boundary(&t).unwrap();
        assert_eq!(
            (next.hour(), next.minute(), next.date()),
            (22, 30, t.date())
        );
        let inside = zoned(2026, 6, 10, 23, 0);
        assert!(s.open_at(&inside));
        let close = s.next_boundary(&inside).unwrap();
        assert_eq!(
            (close.hour(), close.minute(), close.date()),
            (1, 15, jiff::civil::date(2026, 6, 11))
        );
    }

    #[test]
    fn daylight_saving_changes() {
        let s = schedule(&["02:00-03:00"]);
        // 2026-10-25: clocks go back at 03:00 CEST to 02:00 CET; the window opens at
        // 02:00 CEST and is still open an hour later, at 02:30 CET.
        let before = zoned(2026, 10, 25, 1, 0);
        let opens = s.next_boundary(&before).unwrap();
        assert_eq!((opens.hour(), opens.minute()), (2, 0));
        let second_pass = jiff::Timestamp::from_second(opens.timestamp().as_second() + 5400)
            .unwrap()
            .to_zoned_datetime(berlin());
        assert_eq!((second_pass.hour(), second_pass.minute()), (2, 30));
        assert!(
            s.open_at(&second_pass),
            "02:30 CET, after the clocks went back"
        );
        // 2026-03-29: clocks go forward from 02:00 to 03:00; the window never opens.
        let night = zoned(2026, 3, 29, 1, 59);
        assert!(!s.open_at(&night));
        let jumped = jiff::Timestamp::from_second(night.timestamp().as_second() + 60)
            .unwrap()
            .to_zoned_datetime(berlin());
        assert_eq!((jumped.hour(), jumped.minute()), (3, 0));
        assert!(!s.open_at(&jumped));
    }
}
