//! The committed message file (spool/README.md): a magic line, the envelope as one JSON
//! line, the exact message bytes, and a fixed-size end record carrying the body size and
//! a CRC-32 of the body. A file is valid only when all of them agree, so truncation is
//! always detected, and a changed byte is detected whenever the body is read. Header
//! fields made from the whole message (a DKIM signature) follow the body with their own
//! record and checksum, flagged in the end record, and are sent before it. Files are
//! immutable once committed, which is what lets the index be rebuilt from them. Version 1
//! files (no checksum) are still read.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fs::{Fs, FsRead};
use super::id::QueueId;
use crate::smtp::{BodyType, Mailbox, Notify, Ret, ReversePath};

/// The magic line of files written now.
pub const MAGIC: &[u8] = b"ferrymail-message 2\n";
/// The magic line of version 1 files: the same, without a checksum in the end record.
const MAGIC_V1: &[u8] = b"ferrymail-message 1\n";
/// Bound on the envelope line, so a damaged file cannot make us read gigabytes as JSON.
pub const MAX_ENVELOPE_LINE: usize = 4 << 20;
/// `ferrymail-end <16 hex size> <2 hex flags> <8 hex CRC-32>\n`
pub const END_RECORD_LEN: usize = 43;
/// The version 1 end record: `ferrymail-end <16 hex size> <2 hex flags>\n`.
const END_RECORD_V1_LEN: usize = 34;
const END_PREFIX: &[u8] = b"ferrymail-end ";
const FLAG_EIGHT_BIT: u8 = 1;
/// Prepended fields follow the body (`PREPEND_RECORD_LEN` record after them).
const FLAG_PREPENDED: u8 = 2;
/// `ferrymail-prepend <8 hex length> <8 hex CRC-32>\n`
const PREPEND_RECORD_LEN: usize = 36;
const PREPEND_PREFIX: &[u8] = b"ferrymail-prepend ";
/// Bound on prepended fields (a few signatures).
pub const MAX_PREPEND: usize = 64 << 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    /// Unix seconds.
    pub received_at: i64,
    /// Stored as text, empty for the null reverse-path `<>`.
    pub sender: ReversePath,
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
    pub fn new(sender: ReversePath, recipients: Vec<Recipient>, origin: Origin) -> Envelope {
        let now = std::time::SystemTime::now();
        Envelope {
            id: QueueId::generate(now),
            received_at: super::now_unix(),
            sender,
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
    pub address: Mailbox,
    /// RFC 3461 §4.1 NOTIFY, stored as `SUCCESS,FAILURE` or `NEVER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// RFC 3461 §4.2 ORCPT, as `addr-type;address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

impl Recipient {
    pub fn new(address: Mailbox) -> Recipient {
        Recipient {
            address,
            notify: None,
            orcpt: None,
        }
    }

    /// A recipient without DSN parameters, from its address's text.
    pub fn parse(address: &str) -> Result<Recipient, crate::smtp::AddressError> {
        Mailbox::parse(address).map(Recipient::new)
    }
}

/// Where the message came from, for `Received:`, logs and `queue show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub kind: OriginKind,
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
    /// For a delivery status notification: the message and recipients it reports on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<About>,
    /// For a message taken from a bundle: where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleOrigin>,
}

/// How a message entered the spool. The names are the file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginKind {
    /// Received over SMTP.
    #[default]
    Smtp,
    /// Submitted on this host (`sendmail`, `ferrymail send`).
    Local,
    /// Taken from another node's bundle.
    Bundle,
    /// A delivery status notification we made.
    Dsn,
    /// A notice about a notice that could not be delivered, sent to the admin address.
    DoubleBounce,
}

impl OriginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::Smtp => "smtp",
            OriginKind::Local => "local",
            OriginKind::Bundle => "bundle",
            OriginKind::Dsn => "dsn",
            OriginKind::DoubleBounce => "double-bounce",
        }
    }
}

impl std::fmt::Display for OriginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message taken from another node's bundle: the node, the bundle, the message's
/// queue id there, and the position there of each of our recipients, in order. The
/// index remembers them (`imported`), so the message is never taken twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleOrigin {
    pub node: String,
    pub bundle: String,
    pub message: String,
    pub positions: Vec<usize>,
}

/// What a notice reports: it is committed in the same transaction as the outcomes it
/// reports, so after a crash recovery keeps a notice found without its row only when
/// those outcomes were recorded (spool/README.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct About {
    pub id: QueueId,
    /// Positions reported as failed: bounced or expired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<usize>,
    /// Positions reported as delayed: warned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delayed: Vec<usize>,
    /// Positions reported as relayed: delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relayed: Vec<usize>,
}

/// What is known only once the body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub size: u64,
    /// The body holds octets above 127.
    pub eight_bit: bool,
    /// CRC-32 of the body; `None` in version 1 files, which have none.
    pub checksum: Option<u32>,
    /// Header fields to send before the body follow it.
    pub prepended: bool,
}

impl Trailer {
    pub(crate) fn end_record(&self) -> [u8; END_RECORD_LEN] {
        let flags = if self.eight_bit { FLAG_EIGHT_BIT } else { 0 }
            | if self.prepended { FLAG_PREPENDED } else { 0 };
        let text = format!(
            "ferrymail-end {:016x} {:02x} {:08x}\n",
            self.size,
            flags,
            self.checksum.unwrap_or(0)
        );
        text.as_bytes().try_into().expect("fixed width")
    }

    fn parse(record: &[u8]) -> Option<Trailer> {
        let rest = record.strip_prefix(END_PREFIX)?.strip_suffix(b"\n")?;
        let text = std::str::from_utf8(rest).ok()?;
        let mut fields = text.split(' ');
        let (size, flags) = (fields.next()?, fields.next()?);
        let checksum = fields.next();
        if fields.next().is_some() || size.len() != 16 || flags.len() != 2 {
            return None;
        }
        let checksum = match checksum {
            Some(c) if c.len() == 8 => Some(u32::from_str_radix(c, 16).ok()?),
            Some(_) => return None,
            None => None,
        };
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Trailer {
            size: u64::from_str_radix(size, 16).ok()?,
            eight_bit: flags & FLAG_EIGHT_BIT != 0,
            checksum,
            prepended: flags & FLAG_PREPENDED != 0,
        })
    }
}

/// The body's running checksum (CRC-32) and 8-bit flag, as it is written or read.
#[derive(Clone, Default)]
pub struct BodySum {
    crc: crc32fast::Hasher,
    size: u64,
    eight_bit: bool,
}

impl BodySum {
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.size += bytes.len() as u64;
        self.eight_bit |= bytes.iter().any(|b| *b >= 0x80);
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn trailer(&self) -> Trailer {
        Trailer {
            size: self.size,
            eight_bit: self.eight_bit,
            checksum: Some(self.crc.clone().finalize()),
            prepended: false,
        }
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
    #[error("the content does not match its checksum (the file was changed or damaged)")]
    Checksum,
}

impl FormatError {
    /// The file is there but not a valid message: it belongs in `corrupt/`. (An I/O error
    /// says nothing about the file.)
    pub(crate) fn is_damage(&self) -> bool {
        !matches!(self, FormatError::Io(_))
    }
}

/// Writes the magic line and the envelope line; returns the bytes written.
pub(crate) fn write_header(out: &mut impl Write, envelope: &Envelope) -> io::Result<u64> {
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
    /// Header fields sent before the body (a DKIM signature); usually empty.
    pub prepend: Vec<u8>,
}

impl StoredMessage {
    /// The message as sent: prepended fields and body.
    pub(crate) fn content_size(&self) -> u64 {
        self.prepend.len() as u64 + self.trailer.size
    }
}

/// The prepend record and the fields before it, for `write_prepend`.
pub(crate) fn prepend_record(fields: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(fields);
    let mut out = fields.to_vec();
    out.extend_from_slice(
        format!(
            "ferrymail-prepend {:08x} {:08x}\n",
            fields.len(),
            crc.finalize()
        )
        .as_bytes(),
    );
    out
}

/// Reads the prepended fields that end at `end` (where the end record starts); returns
/// them and where they start.
fn read_prepend(file: &mut Box<dyn FsRead>, end: u64) -> Result<(Vec<u8>, u64), FormatError> {
    let record_at = end
        .checked_sub(PREPEND_RECORD_LEN as u64)
        .ok_or(FormatError::EndRecord)?;
    file.seek(SeekFrom::Start(record_at))?;
    let mut record = [0u8; PREPEND_RECORD_LEN];
    file.read_exact(&mut record)?;
    let text = record
        .strip_prefix(PREPEND_PREFIX)
        .and_then(|r| r.strip_suffix(b"\n"))
        .and_then(|r| std::str::from_utf8(r).ok())
        .ok_or(FormatError::EndRecord)?;
    let (len, crc) = text.split_once(' ').ok_or(FormatError::EndRecord)?;
    let len = usize::from_str_radix(len, 16).map_err(|_| FormatError::EndRecord)?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| FormatError::EndRecord)?;
    if len > MAX_PREPEND {
        return Err(FormatError::EndRecord);
    }
    let start = record_at
        .checked_sub(len as u64)
        .ok_or(FormatError::EndRecord)?;
    file.seek(SeekFrom::Start(start))?;
    let mut fields = vec![0u8; len];
    file.read_exact(&mut fields)?;
    let mut check = crc32fast::Hasher::new();
    check.update(&fields);
    if check.finalize() != crc {
        return Err(FormatError::Checksum);
    }
    Ok((fields, start))
}

/// Reads the magic line and the envelope, and nothing after them: all that can be known
/// of a damaged file (for the notice to its sender). Returns the envelope, the offset of
/// the body and the end record's length for this file's version.
fn read_head(reader: &mut impl BufRead) -> Result<(Envelope, u64, usize), FormatError> {
    let mut magic = vec![0u8; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|_| FormatError::Magic)?;
    let end_len = match magic.as_slice() {
        m if m == MAGIC => END_RECORD_LEN,
        m if m == MAGIC_V1 => END_RECORD_V1_LEN,
        _ => return Err(FormatError::Magic),
    };
    let mut line = Vec::new();
    reader
        .take(MAX_ENVELOPE_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Err(FormatError::EnvelopeLine);
    }
    let envelope: Envelope = serde_json::from_slice(&line).map_err(FormatError::EnvelopeJson)?;
    check_envelope(&envelope).map_err(FormatError::Envelope)?;
    Ok((envelope, (MAGIC.len() + line.len() + 1) as u64, end_len))
}

/// The envelope of a message file, whatever state the rest of it is in.
pub(crate) fn read_envelope(fs: &dyn Fs, path: &Path) -> Result<Envelope, FormatError> {
    let mut reader = BufReader::new(fs.open(path)?);
    read_head(&mut reader).map(|(envelope, _, _)| envelope)
}

/// Reads and checks a message file's envelope and end record (the body's checksum is
/// checked when the body is read).
pub fn read_stored(fs: &dyn Fs, path: &Path) -> Result<StoredMessage, FormatError> {
    let len = fs.len(path)?;
    let mut reader = BufReader::new(fs.open(path)?);
    let (envelope, body_offset, end_len) = read_head(&mut reader)?;
    if len < body_offset + end_len as u64 {
        return Err(FormatError::EndRecord);
    }
    let mut inner = reader.into_inner();
    inner.seek(SeekFrom::Start(len - end_len as u64))?;
    let mut record = vec![0u8; end_len];
    inner.read_exact(&mut record)?;
    let trailer = Trailer::parse(&record).ok_or(FormatError::EndRecord)?;
    if trailer.checksum.is_some() != (end_len == END_RECORD_LEN) {
        return Err(FormatError::EndRecord);
    }
    let end = len - end_len as u64;
    let (prepend, body_end) = if trailer.prepended {
        read_prepend(&mut inner, end)?
    } else {
        (Vec::new(), end)
    };
    if body_offset + trailer.size != body_end {
        return Err(FormatError::Length);
    }
    Ok(StoredMessage {
        envelope,
        body_offset,
        trailer,
        prepend,
    })
}

/// Reads a committed message's content (prepended fields, then the exact message bytes),
/// checking its checksum.
pub fn read_body(fs: &dyn Fs, path: &Path, stored: &StoredMessage) -> Result<Vec<u8>, FormatError> {
    let mut body = Vec::with_capacity(stored.content_size() as usize);
    BodyReader::open(fs, path, stored)?
        .read_to_end(&mut body)
        .map_err(format_error)?;
    Ok(body)
}

/// Reads the whole body once to check its checksum, holding only a buffer: before a large
/// message is streamed to an upstream, which must never see damaged content.
pub(crate) fn verify_body(
    fs: &dyn Fs,
    path: &Path,
    stored: &StoredMessage,
) -> Result<(), FormatError> {
    let mut reader = BodyReader::open(fs, path, stored)?;
    let mut buf = vec![0u8; 64 << 10];
    while reader.read(&mut buf).map_err(format_error)? > 0 {}
    Ok(())
}

/// A message's content read in pieces: its prepended fields, then its body. The body's
/// checksum is checked at the end: the read that reaches it fails with
/// `FormatError::Checksum` (as an `io::Error` of kind InvalidData) when it was changed.
pub struct BodyReader {
    prepend: io::Cursor<Vec<u8>>,
    file: io::Take<Box<dyn FsRead>>,
    sum: BodySum,
    expected: Trailer,
}

impl BodyReader {
    pub fn open(
        fs: &dyn Fs,
        path: &Path,
        stored: &StoredMessage,
    ) -> Result<BodyReader, FormatError> {
        let mut file = fs.open(path)?;
        file.seek(SeekFrom::Start(stored.body_offset))?;
        Ok(BodyReader {
            prepend: io::Cursor::new(stored.prepend.clone()),
            file: file.take(stored.trailer.size),
            sum: BodySum::default(),
            expected: stored.trailer,
        })
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prepend.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        let n = self.file.read(buf)?;
        self.sum.update(&buf[..n]);
        if n == 0 || self.sum.size() == self.expected.size {
            let got = self.sum.trailer();
            let intact = got.size == self.expected.size
                && self
                    .expected
                    .checksum
                    .is_none_or(|c| got.checksum == Some(c));
            if !intact {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    FormatError::Checksum,
                ));
            }
        }
        Ok(n)
    }
}

impl From<FormatError> for io::Error {
    fn from(e: FormatError) -> io::Error {
        match e {
            FormatError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// An `io::Error` from reading a body, as the format error it stands for.
fn format_error(e: io::Error) -> FormatError {
    let checksum = e.kind() == io::ErrorKind::InvalidData
        && e.get_ref()
            .and_then(|i| i.downcast_ref::<FormatError>())
            .is_some_and(|inner| matches!(inner, FormatError::Checksum));
    if checksum {
        FormatError::Checksum
    } else {
        FormatError::Io(e)
    }
}

/// The envelope rules every stored message obeys, whatever wrote it, beyond what its
/// types hold (their addresses are parsed as they are read).
pub(crate) fn check_envelope(e: &Envelope) -> Result<(), String> {
    if e.recipients.is_empty() {
        return Err("no recipients".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
