//! Lower-case hexadecimal, as digests and keys are written in bundles, CRAM-MD5 and
//! XFERRY's resume keys.

/// `bytes` as lower-case hex digits.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (either case) as bytes; `None` for an odd count or anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Exactly 32 bytes' worth of hex digits (a SHA-256 or HMAC-SHA256).
pub(crate) fn decode32(text: &str) -> Option<[u8; 32]> {
    decode(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(super::encode(&[0, 0xab, 0x7f]), "00ab7f");
        assert_eq!(super::decode("00AB7f"), Some(vec![0, 0xab, 0x7f]));
        for bad in ["0", "zz", "é1"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
        assert_eq!(super::decode32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(super::decode32("abab"), None);
    }
}
