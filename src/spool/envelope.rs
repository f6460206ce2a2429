//! The committed message file (spool/README.md): a magic line, the envelope as one JSON
//! line, the exact message bytes, and a fixed-size end record carrying the body size.
//! A file is valid only when all four agree, so truncation is always detected; files
//! are immutable once committed, which is what lets the index be rebuilt from them.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fs::Fs;
use super::id::QueueId;
use crate::smtp::{Mailbox, ReversePath};

pub const MAGIC: &[u8] = b"ferrymail-message 1\n";
/// Bound on the envelope line, so a damaged file cannot make us read gigabytes as JSON.
pub const MAX_ENVELOPE_LINE: usize = 4 << 20;
/// `ferrymail-end <16 hex size> <2 hex flags>\n`
pub const END_RECORD_LEN: usize = 34;
const END_PREFIX: &[u8] = b"ferrymail-end ";
const FLAG_EIGHT_BIT: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    /// Unix seconds.
    pub received_at: i64,
    /// Empty for the null reverse-path `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// BODY= as declared at MAIL (RFC 6152, RFC 3030); `None` if not declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyType>,
    /// SMTPUTF8 was requested (RFC 6531).
    #[serde(default)]
    pub smtputf8: bool,
    /// RFC 3461 §4.4 ENVID, as xtext-decoded text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// RFC 3461 §4.3 RET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    pub origin: Origin,
}

impl Envelope {
    /// A new message's envelope: a fresh queue id, received now, and no ESMTP options.
    pub fn new(sender: impl Into<String>, recipients: Vec<Recipient>, origin: Origin) -> Envelope {
        let now = std::time::SystemTime::now();
        Envelope {
            id: QueueId::generate(now),
            received_at: super::now_unix(),
            sender: sender.into(),
            recipients,
            body: None,
            smtputf8: false,
            envid: None,
            ret: None,
            origin,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 §4.1 NOTIFY, e.g. `SUCCESS,FAILURE` or `NEVER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// RFC 3461 §4.2 ORCPT, as `addr-type;address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

impl Recipient {
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

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

/// Where the message came from, for `Received:`, logs and `queue show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `smtp` or `local`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The submitting user of a local injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The maildrop file a local injection came from: picking it up twice is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<String>,
}

/// What is known only once the body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub size: u64,
    /// The body holds octets above 127.
    pub eight_bit: bool,
}

impl Trailer {
    pub fn end_record(&self) -> [u8; END_RECORD_LEN] {
        let flags = if self.eight_bit { FLAG_EIGHT_BIT } else { 0 };
        let text = format!("ferrymail-end {:016x} {:02x}\n", self.size, flags);
        text.as_bytes().try_into().expect("fixed width")
    }

    fn parse(record: &[u8]) -> Option<Trailer> {
        let rest = record.strip_prefix(END_PREFIX)?.strip_suffix(b"\n")?;
        let text = std::str::from_utf8(rest).ok()?;
        let (size, flags) = text.split_once(' ')?;
        if size.len() != 16 || flags.len() != 2 {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Trailer {
            size: u64::from_str_radix(size, 16).ok()?,
            eight_bit: flags & FLAG_EIGHT_BIT != 0,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a ferrymail message file (bad magic line)")]
    Magic,
    #[error("envelope line missing or longer than {MAX_ENVELOPE_LINE} bytes")]
    EnvelopeLine,
    #[error("envelope is not valid JSON: {0}")]
    EnvelopeJson(serde_json::Error),
    #[error("envelope: {0}")]
    Envelope(String),
    #[error("end record missing or damaged (file truncated?)")]
    EndRecord,
    #[error("file length does not match the end record (file truncated?)")]
    Length,
}

/// Writes the magic line and the envelope line; returns the bytes written.
pub fn write_header(out: &mut impl Write, envelope: &Envelope) -> io::Result<u64> {
    let json = serde_json::to_vec(envelope).map_err(io::Error::other)?;
    out.write_all(MAGIC)?;
    out.write_all(&json)?;
    out.write_all(b"\n")?;
    Ok((MAGIC.len() + json.len() + 1) as u64)
}

/// A committed message file, checked.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub envelope: Envelope,
    pub body_offset: u64,
    pub trailer: Trailer,
}

/// Reads and checks a message file's envelope and end record.
pub fn read_stored(fs: &dyn Fs, path: &Path) -> Result<StoredMessage, FormatError> {
    let len = fs.len(path)?;
    let mut reader = BufReader::new(fs.open(path)?);
    let mut magic = vec![0u8; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|_| FormatError::Magic)?;
    if magic != MAGIC {
        return Err(FormatError::Magic);
    }
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_ENVELOPE_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Err(FormatError::EnvelopeLine);
    }
    let envelope: Envelope = serde_json::from_slice(&line).map_err(FormatError::EnvelopeJson)?;
    check_envelope(&envelope).map_err(FormatError::Envelope)?;
    let body_offset = (MAGIC.len() + line.len() + 1) as u64;
    if len < body_offset + END_RECORD_LEN as u64 {
        return Err(FormatError::EndRecord);
    }
    let mut inner = reader.into_inner();
    inner.seek(SeekFrom::Start(len - END_RECORD_LEN as u64))?;
    let mut record = [0u8; END_RECORD_LEN];
    inner.read_exact(&mut record)?;
    let trailer = Trailer::parse(&record).ok_or(FormatError::EndRecord)?;
    if body_offset + trailer.size + END_RECORD_LEN as u64 != len {
        return Err(FormatError::Length);
    }
    Ok(StoredMessage {
        envelope,
        body_offset,
        trailer,
    })
}

/// Reads a committed message's body (the exact message bytes).
pub fn read_body(fs: &dyn Fs, path: &Path, stored: &StoredMessage) -> io::Result<Vec<u8>> {
    let mut file = fs.open(path)?;
    file.seek(SeekFrom::Start(stored.body_offset))?;
    let mut body = Vec::with_capacity(stored.trailer.size as usize);
    file.take(stored.trailer.size).read_to_end(&mut body)?;
    Ok(body)
}

/// The envelope rules every stored message obeys, whatever wrote it.
pub fn check_envelope(e: &Envelope) -> Result<(), String> {
    ReversePath::parse(&e.sender).map_err(|err| format!("sender {:?}: {err}", e.sender))?;
    if e.recipients.is_empty() {
        return Err("no recipients".to_owned());
    }
    for r in &e.recipients {
        Mailbox::parse(&r.address).map_err(|err| format!("recipient {:?}: {err}", r.address))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_record_round_trips() {
        for t in [
            Trailer {
                size: 0,
                eight_bit: false,
            },
            Trailer {
                size: u64::MAX,
                eight_bit: true,
            },
        ] {
            assert_eq!(Trailer::parse(&t.end_record()), Some(t));
        }
        assert_eq!(Trailer::parse(b"ferrymail-end 00000000000000zz 00\n"), None);
    }
}
