//! The name a resumable transfer goes by: the sender's queue id and the SHA-256 of the
//! content as it is sent, `ID.HEX`. The receiver uses it as a file name, so it is
//! strict: 1 to 32 ASCII letters and digits, a dot, 64 lower-case hex digits.

use std::fmt;

/// The queue id's longest form.
const MAX_ID: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResumeKey(String);

impl ResumeKey {
    /// The key of content `sha256` sent as message `id` (letters and digits kept).
    pub fn new(id: &str, sha256: &[u8; 32]) -> ResumeKey {
        let id: String = id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(MAX_ID)
            .collect();
        let id = if id.is_empty() { "0".into() } else { id };
        ResumeKey(format!("{id}.{}", crate::hex::encode(sha256)))
    }

    /// A key as a peer wrote it; `None` unless it has exactly the form above.
    pub fn parse(text: &str) -> Option<ResumeKey> {
        let (id, hex) = text.split_once('.')?;
        let id_ok =
            (1..=MAX_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
        let hex_ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (id_ok && hex_ok).then(|| ResumeKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The content's SHA-256, as bytes.
    pub fn sha256(&self) -> [u8; 32] {
        crate::hex::decode32(&self.0[self.0.len() - 64..]).expect("checked at parse")
    }
}

impl fmt::Display for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_strangers_are_refused() {
        let key = ResumeKey::new("9F2A-01", &[0xab; 32]);
        assert!(key.as_str().starts_with("9F2A01.abab"));
        assert_eq!(ResumeKey::parse(key.as_str()), Some(key.clone()));
        assert_eq!(key.sha256(), [0xab; 32]);
        let hex = "ab".repeat(32);
        for bad in [
            String::new(),
            format!(".{hex}"),
            format!("../x.{hex}"),
            format!("a/b.{hex}"),
            format!("ok.{}", "AB".repeat(32)),
            format!("ok.{}", &hex[1..]),
            format!("{}.{hex}", "x".repeat(33)),
            "ok".into(),
        ] {
            assert_eq!(ResumeKey::parse(&bad), None, "{bad}");
        }
    }
}
