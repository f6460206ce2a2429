//! Dates as message headers write them (RFC 5322 §3.3), for `Date:`, `Received:` and DSN
//! fields: local time for now, UTC for a stored instant.

/// Now, in the local time zone: `Sun, 29 Nov 2026 21:00:00 +0100`.
pub fn now() -> String {
    jiff::fmt::rfc2822::to_string(&jiff::ZonedDateTime::now()).unwrap_or_else(|_| at(0))
}

/// A Unix time, in UTC.
pub fn at(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .ok()
        .and_then(|t| {
            jiff::fmt::rfc2822::to_string(&t.to_zoned_datetime(jiff::tz::TimeZone::UTC)).ok()
        })
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::at(1_800_000_000), "Fri, 15 Jan 2027 08:00:00 +0000");
        assert!(super::now().len() >= 29);
    }
}
