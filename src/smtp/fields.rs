//! Header fields of a message as stored (RFC 5322 §2.2, CRLF lines): a header section
//! split into its fields, each with its folded lines and its CRLF, and a field's name.

/// The fields of a header section; the empty line that ends it, and anything after it,
/// is not included.
pub fn split(section: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < section.len() {
        let line_end = find(&section[i..], b"\r\n").map_or(section.len(), |p| i + p + 2);
        if line_end - i == 2 {
            break; // the empty line
        }
        if !matches!(section.get(line_end), Some(b' ' | b'\t')) {
            fields.push(&section[start..line_end]);
            start = line_end;
        }
        i = line_end;
    }
    fields
}

/// A field's name: what comes before its colon, without white space.
pub fn name(field: &[u8]) -> &[u8] {
    let colon = field.iter().position(|b| *b == b':').unwrap_or(0);
    field[..colon].trim_ascii()
}

/// A field's value: what comes after its colon, folding and final CRLF included.
pub fn value(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|b| *b == b':')
        .map_or(&field[field.len()..], |c| &field[c + 1..])
}

/// Whether `field` is named `wanted` (names compare without regard to case).
pub fn is(field: &[u8], wanted: &str) -> bool {
    name(field).eq_ignore_ascii_case(wanted.as_bytes())
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_folds() {
        let s = b"A: 1\r\nB: 2\r\n 3\r\nc : 4\r\n\r\nbody";
        let f = split(s);
        assert_eq!(f, [&b"A: 1\r\n"[..], b"B: 2\r\n 3\r\n", b"c : 4\r\n"]);
        assert_eq!(name(f[2]), b"c");
        assert!(is(f[2], "C"));
        assert_eq!(value(f[1]), b" 2\r\n 3\r\n");
        assert_eq!(split(b"X: no end"), [&b"X: no end"[..]]);
    }
}
