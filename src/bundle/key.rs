//! Bundle keys: a secret two nodes share, kept in a file as one line of hex (at least
//! 32 bytes, as `ferrymail bundle keygen` writes). Each node names the other's key in
//! its `[[bundle_peer]]`; the same file serves both directions.

use std::path::Path;

use super::format::Key;
use crate::hex;

/// Fewest secret bytes a key file may hold (HMAC-SHA256's own strength).
pub const MIN_KEY_BYTES: usize = 32;

/// Reads a key file.
pub fn read(path: &Path) -> Result<Key, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|why| format!("{}: {why}", path.display()))
}

fn parse(text: &str) -> Result<Key, String> {
    let line = text.trim();
    let secret = hex::decode(line).ok_or("not one line of hex digits")?;
    if secret.len() < MIN_KEY_BYTES {
        return Err(format!(
            "{} bytes; a key needs at least {MIN_KEY_BYTES} (ferrymail bundle keygen)",
            secret.len()
        ));
    }
    Ok(Key::new(&secret))
}

/// A new key file's contents.
pub(crate) fn generate() -> String {
    let mut secret = [0u8; MIN_KEY_BYTES];
    getrandom::fill(&mut secret).expect("the OS random source works");
    format!("{}\n", hex::encode(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_and_short_or_garbled_ones_do_not() {
        assert!(parse(&generate()).is_ok());
        assert!(parse("abcd\n").unwrap_err().contains("at least 32"));
        assert!(parse("not hex at all").is_err());
        assert_ne!(generate(), generate());
    }
}
