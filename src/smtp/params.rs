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
