//! The MAIL and RCPT parameters a message keeps: its body type (`BODY=`, RFC 6152 §2 and
//! RFC 3030 §3), what a failure notice returns of it (`RET=`, RFC 3461 §4.3) and which
//! notices a recipient's sender asked for (`NOTIFY=`, RFC 3461 §4.1). Parsed by `command`
//! and by `sendmail -N`, stored in the spool's envelope (the serde names are the file
//! format), passed on by the client.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyType {
    #[serde(rename = "7bit")]
    SevenBit,
    #[serde(rename = "8bitmime")]
    EightBitMime,
    #[serde(rename = "binarymime")]
    BinaryMime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    Full,
    Hdrs,
}

/// RFC 3461 §4.1 NOTIFY: `NEVER`, or any of `SUCCESS`, `FAILURE` and `DELAY`. Stored
/// and sent in its normal form, upper case, in the order given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Notify(Vec<NotifyOn>);

/// One event a NOTIFY list asks to hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyOn {
    Success,
    Failure,
    Delay,
}

impl NotifyOn {
    fn keyword(self) -> &'static str {
        match self {
            NotifyOn::Success => "SUCCESS",
            NotifyOn::Failure => "FAILURE",
            NotifyOn::Delay => "DELAY",
        }
    }
}

impl Notify {
    /// `NEVER`, or a comma list of the three keywords, in any case; spaces around a
    /// keyword are allowed (`sendmail -N "success, delay"`). A keyword given twice counts
    /// once (the grammar allows it).
    pub fn parse(s: &str) -> Option<Notify> {
        let words: Vec<String> = s
            .split(',')
            .map(|w| w.trim().to_ascii_uppercase())
            .collect();
        if words == ["NEVER"] {
            return Some(Notify(Vec::new()));
        }
        let mut on = Vec::new();
        for word in &words {
            let event = [NotifyOn::Success, NotifyOn::Failure, NotifyOn::Delay]
                .into_iter()
                .find(|e| e.keyword() == word)?;
            if !on.contains(&event) {
                on.push(event);
            }
        }
        Some(Notify(on))
    }

    /// The sender asked to hear about `event`.
    pub(crate) fn wants(&self, event: NotifyOn) -> bool {
        self.0.contains(&event)
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("NEVER");
        }
        let words: Vec<&str> = self.0.iter().map(|e| e.keyword()).collect();
        f.write_str(&words.join(","))
    }
}

impl TryFrom<String> for Notify {
    type Error = String;
    fn try_from(s: String) -> Result<Notify, String> {
        Notify::parse(&s)
            .ok_or_else(|| format!("NOTIFY {s:?}: not NEVER or a list of SUCCESS, FAILURE, DELAY"))
    }
}

impl From<Notify> for String {
    fn from(n: Notify) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_lists() {
        for (given, normal) in [
            ("never", "NEVER"),
            ("Success", "SUCCESS"),
            ("failure,DELAY", "FAILURE,DELAY"),
            ("success, failure , delay", "SUCCESS,FAILURE,DELAY"),
            ("SUCCESS,SUCCESS", "SUCCESS"),
        ] {
            assert_eq!(Notify::parse(given).unwrap().to_string(), normal);
        }
        for bad in ["", "NEVER,SUCCESS", "NEVER,NEVER", "SOMETIMES", "SUCCESS,"] {
            assert_eq!(Notify::parse(bad), None, "{bad:?}");
        }
        let n: Notify = serde_json::from_str("\"SUCCESS,DELAY\"").unwrap();
        assert!(n.wants(NotifyOn::Delay) && !n.wants(NotifyOn::Failure));
        assert!(!Notify::parse("NEVER").unwrap().wants(NotifyOn::Failure));
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"SUCCESS,DELAY\"");
    }

    /// The names are the spool's envelope format (spool/README.md): files written
    /// before these types moved here must still read.
    #[test]
    fn the_stored_names_stay_as_the_spool_format_says() {
        for (body, name) in [
            (BodyType::SevenBit, "\"7bit\""),
            (BodyType::EightBitMime, "\"8bitmime\""),
            (BodyType::BinaryMime, "\"binarymime\""),
        ] {
            assert_eq!(serde_json::to_string(&body).unwrap(), name);
            assert_eq!(serde_json::from_str::<BodyType>(name).unwrap(), body);
        }
        for (ret, name) in [(Ret::Full, "\"full\""), (Ret::Hdrs, "\"hdrs\"")] {
            assert_eq!(serde_json::to_string(&ret).unwrap(), name);
            assert_eq!(serde_json::from_str::<Ret>(name).unwrap(), ret);
        }
    }
}
