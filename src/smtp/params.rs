//! The MAIL parameters a message keeps: its body type (`BODY=`, RFC 6152 §2 and RFC 3030
//! §3) and what a failure notice returns of it (`RET=`, RFC 3461 §4.3). Parsed by
//! `command`, stored in the spool's envelope (the serde names are the file format),
//! passed on by the client.

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

#[cfg(test)]
mod tests {
    use super::*;

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
