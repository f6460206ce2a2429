//! XFERRY: the ESMTP extension two ferrymail nodes speak to each other (docs/xferry.md),
//! X-prefixed as RFC 5321 §4.1.5 asks of a private extension. A listener configured
//! with `ferry = true` advertises `XFERRY ZSTD RESUME`; a client whose route says
//! `ferry = true` uses it only where it is advertised. Every other peer gets plain SMTP.
//!
//! - `XZSTD` (a MAIL parameter): the transaction's BDAT content is a zstd stream; the
//!   receiver decompresses it within bounds (`decompress`), the sender compresses it
//!   piece by piece (`compress`).
//! - `XRESUME=<key>` (a MAIL parameter): the receiver keeps what arrives of the content
//!   (`partial`) under the key (the sender's queue id and the content's SHA-256), and
//!   its 250 to MAIL says how many bytes it holds; the sender sends only the rest.

pub mod compress;
pub mod decompress;
pub mod history;
pub mod key;
pub mod partial;

pub use key::ResumeKey;

/// The EHLO keyword, with what this implementation offers.
pub const EHLO_LINE: &str = "XFERRY ZSTD RESUME";
/// The EHLO keyword alone.
pub const KEYWORD: &str = "XFERRY";
/// MAIL parameter: the BDAT content is zstd-compressed.
pub const PARAM_ZSTD: &str = "XZSTD";
/// MAIL parameter: the content may be resumed under the key given.
pub const PARAM_RESUME: &str = "XRESUME";

/// The text of the 250 reply to a MAIL with `XRESUME=key`: the receiver holds the
/// content's first `offset` bytes.
pub(crate) fn resume_reply_text(key: &ResumeKey, offset: u64) -> String {
    format!("Resume {key} at {offset}")
}

/// Reads an offer made by `resume_reply_text` for `key`: `None` when the reply names
/// another key or says nothing readable (the sender then sends it all).
pub(crate) fn parse_resume_offer(text: &str, key: &ResumeKey) -> Option<u64> {
    let mut words = text.split_ascii_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("Resume") {
            let named = words.next()?;
            let at = words.next()?;
            let offset = words.next()?;
            if named != key.as_str() || !at.eq_ignore_ascii_case("at") {
                return None;
            }
            return offset.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_offers_are_read_only_for_their_key() {
        let key = ResumeKey::new("ABC123", &[7u8; 32]);
        let other = ResumeKey::new("ABC123", &[8u8; 32]);
        let text = format!("2.1.0 {}", resume_reply_text(&key, 4096));
        assert_eq!(parse_resume_offer(&text, &key), Some(4096));
        assert_eq!(parse_resume_offer(&text, &other), None);
        assert_eq!(parse_resume_offer("2.1.0 Ok", &key), None);
        let bad = format!("Resume {key} at lots");
        assert_eq!(parse_resume_offer(&bad, &key), None);
    }
}
