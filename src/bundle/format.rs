//! The bundle container (docs in spool/README.md, "Bundles"): a magic line, a header
//! (one JSON line) with its MAC, then chunks, each a frame line and a zstd frame of
//! records, then an end line. Every part is authenticated with HMAC-SHA256 under the
//! key the two nodes share, and each chunk MAC binds the header and the chunk's place,
//! so chunks cannot be moved between bundles or reordered. A chunk also carries a
//! CRC-32 of its bytes: a chunk whose CRC fails was damaged in transit (skipped, its
//! messages reported), while one whose CRC holds but whose MAC fails was changed on
//! purpose (the whole bundle is refused). Chunks decompress independently, so a
//! damaged or missing chunk costs only its own messages.
//!
//! Invariants: a chunk never decompresses past the raw length its frame declares, and
//! that is at most `MAX_RAW_CHUNK`; every line read is bounded.

use std::io::{self, BufRead, Read, Write};

use ring::hmac;
use serde::{Deserialize, Serialize};

/// The first line of every bundle and receipt.
pub const MAGIC: &[u8] = b"ferrymail-bundle 1\n";
/// Raw bytes gathered into one chunk before it is compressed (a larger message makes
/// a larger chunk of its own).
pub const CHUNK_TARGET: usize = 1 << 20;
/// Largest raw chunk a reader accepts: a message at the largest size any node takes,
/// with its record. Decompression stops there whatever the frame says.
pub const MAX_RAW_CHUNK: u64 = 1 << 30;
/// Bound on the header line and on frame lines.
const MAX_HEADER_LINE: usize = 64 << 10;
const MAX_FRAME_LINE: usize = 256;
/// zstd level: level 3 is zstd's default, fast on both sides, and near the best ratio
/// for mail-sized records.
const LEVEL: i32 = 3;

/// What a bundle file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Messages with their envelopes.
    Mail,
    /// What an importer accepted and refused of a bundle.
    Receipt,
}

/// The header: who wrote the bundle, for whom, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub kind: Kind,
    /// The bundle's id, unique per node (a queue id's form: it sorts by time).
    pub id: String,
    /// The node that wrote it.
    pub node: String,
    /// The node it is for.
    pub to: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The route whose mail it carries (mail bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `zstd`: the only compression written and read.
    pub compression: String,
    /// `hmac-sha256`: the only authentication written and read.
    pub auth: String,
}

pub const COMPRESSION: &str = "zstd";
pub const AUTH: &str = "hmac-sha256";

/// A key shared by two nodes.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    pub fn new(secret: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn verify(&self, parts: &[&[u8]], mac: &[u8; 32]) -> bool {
        let expected = self.sign(parts);
        crate::smtp::cram_md5::same_secret(expected, mac)
    }
}

fn header_parts(json: &[u8]) -> [&[u8]; 2] {
    [b"ferrymail-bundle header\0", json]
}

/// Writes a bundle: header, then records gathered into chunks, then the end line.
pub struct Writer<W: Write> {
    out: W,
    key: Key,
    header_mac: [u8; 32],
    raw: Vec<u8>,
    chunks: u64,
    records: u64,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, key: &Key, header: &Header) -> io::Result<Writer<W>> {
        let json = serde_json::to_vec(header).map_err(io::Error::other)?;
        let header_mac = key.sign(&header_parts(&json));
        let mut head = Vec::with_capacity(json.len() + 100);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&json);
        head.push(b'\n');
        head.extend_from_slice(
            format!("header-mac {}\n", crate::hex::encode(&header_mac)).as_bytes(),
        );
        out.write_all(&head)?;
        Ok(Writer {
            out,
            key: key.clone(),
            header_mac,
            raw: Vec::with_capacity(CHUNK_TARGET + (64 << 10)),
            chunks: 0,
            records: 0,
            written: head.len() as u64,
        })
    }

    /// Adds one record (`record::encode`); a full chunk is compressed and written.
    pub fn add(&mut self, record: &[u8]) -> io::Result<()> {
        self.raw.extend_from_slice(record);
        self.records += 1;
        if self.raw.len() >= CHUNK_TARGET {
            self.seal_chunk()?;
        }
        Ok(())
    }

    /// Bytes written so far, and raw bytes not yet compressed.
    pub fn sizes(&self) -> (u64, u64) {
        (self.written, self.raw.len() as u64)
    }

    /// Compresses and writes what is gathered (nothing when empty).
    pub(crate) fn seal_chunk(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let z = zstd::bulk::compress(&self.raw, LEVEL)?;
        let seq = self.chunks;
        let raw_len = self.raw.len() as u64;
        let mac = self.key.sign(&[
            b"chunk\0",
            &self.header_mac,
            &seq.to_be_bytes(),
            &raw_len.to_be_bytes(),
            &z,
        ]);
        let line = format!(
            "chunk {seq} {} {raw_len} {:08x} {}\n",
            z.len(),
            crc32fast::hash(&z),
            crate::hex::encode(&mac)
        );
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(&z)?;
        self.written += (line.len() + z.len()) as u64;
        self.chunks += 1;
        self.raw.clear();
        Ok(())
    }

    /// Writes the last chunk and the end line; returns the output and what it holds.
    pub fn finish(mut self) -> io::Result<(W, Totals)> {
        self.seal_chunk()?;
        let parts = end_parts(
            &self.header_mac,
            self.chunks.to_be_bytes(),
            self.records.to_be_bytes(),
        );
        let mac = self
            .key
            .sign(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let line = format!(
            "end {} {} {}\n",
            self.chunks,
            self.records,
            crate::hex::encode(&mac)
        );
        self.out.write_all(line.as_bytes())?;
        self.out.flush()?;
        self.written += line.len() as u64;
        Ok((
            self.out,
            Totals {
                chunks: self.chunks,
                records: self.records,
                bytes: self.written,
            },
        ))
    }
}

fn end_parts(header_mac: &[u8; 32], chunks: [u8; 8], records: [u8; 8]) -> Vec<Vec<u8>> {
    vec![
        b"end\0".to_vec(),
        header_mac.to_vec(),
        chunks.to_vec(),
        records.to_vec(),
    ]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub chunks: u64,
    pub records: u64,
    pub bytes: u64,
}

/// Why a bundle cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("not a ferrymail bundle")]
    NotABundle,
    #[error("bundle header unreadable: {0}")]
    Header(String),
    #[error("reading the bundle: {0}")]
    Io(#[from] io::Error),
}

/// The next thing in a bundle after the header.
#[derive(Debug)]
pub enum Frame {
    Chunk(Chunk),
    /// The end line: chunks and records the writer wrote, and whether its MAC holds.
    End {
        chunks: u64,
        records: u64,
        authentic: bool,
    },
    /// The file ends here without its end line.
    Truncated,
    /// A frame line that cannot be read: nothing after it can be found.
    Garbled(String),
}

/// A chunk as read: its bytes are decompressed only once it is known to be authentic.
#[derive(Debug)]
pub struct Chunk {
    pub seq: u64,
    pub raw_len: u64,
    /// Its CRC holds: the bytes are as written, or were changed by someone who
    /// recomputed the CRC.
    pub intact: bool,
    /// Its MAC holds: the bytes are as the peer wrote them.
    pub authentic: bool,
    z: Vec<u8>,
}

impl Chunk {
    /// The chunk's records, decompressed: at most its declared raw length.
    pub fn records(&self) -> Result<Vec<u8>, String> {
        let raw = zstd::bulk::decompress(&self.z, self.raw_len as usize)
            .map_err(|e| format!("chunk {}: does not decompress: {e}", self.seq))?;
        if raw.len() as u64 != self.raw_len {
            return Err(format!(
                "chunk {}: {} bytes where {} were written",
                self.seq,
                raw.len(),
                self.raw_len
            ));
        }
        Ok(raw)
    }
}

/// Reads a bundle a frame at a time.
pub struct Reader<R: BufRead> {
    input: R,
    header: Header,
    header_json: Vec<u8>,
    header_mac: [u8; 32],
    key: Option<Key>,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    /// Reads the magic line and the header, not yet authenticated (`authenticate`).
    pub fn open(mut input: R) -> Result<Reader<R>, OpenError> {
        let magic = read_line(&mut input, MAGIC.len()).map_err(|_| OpenError::NotABundle)?;
        if magic.as_deref() != Some(MAGIC) {
            return Err(OpenError::NotABundle);
        }
        let bad = |m: &str| OpenError::Header(m.to_owned());
        let mut json =
            read_line(&mut input, MAX_HEADER_LINE)?.ok_or_else(|| bad("missing or too long"))?;
        json.pop();
        let header: Header =
            serde_json::from_slice(&json).map_err(|e| OpenError::Header(e.to_string()))?;
        let mac_line =
            read_line(&mut input, MAX_FRAME_LINE)?.ok_or_else(|| bad("no header MAC"))?;
        let header_mac = std::str::from_utf8(&mac_line)
            .ok()
            .and_then(|l| l.strip_prefix("header-mac "))
            .and_then(|l| crate::hex::decode32(l.trim_end()))
            .ok_or_else(|| bad("header MAC line unreadable"))?;
        Ok(Reader {
            input,
            header,
            header_json: json,
            header_mac,
            key: None,
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Checks the header's MAC under `key`; the frames after it are checked with it.
    pub fn authenticate(&mut self, key: &Key) -> bool {
        let ok = key.verify(&header_parts(&self.header_json), &self.header_mac);
        if ok {
            self.key = Some(key.clone());
        }
        ok
    }

    /// The next frame; `None` after the end line or a frame that ends the reading.
    pub(crate) fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        if self.done {
            return Ok(None);
        }
        let key = self
            .key
            .clone()
            .ok_or_else(|| io::Error::other("bundle read before its header was authenticated"))?;
        let frame = self.read_frame(&key)?;
        if !matches!(frame, Frame::Chunk(_)) {
            self.done = true;
        }
        Ok(Some(frame))
    }

    fn read_frame(&mut self, key: &Key) -> io::Result<Frame> {
        let line = match read_line(&mut self.input, MAX_FRAME_LINE) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(Frame::Garbled("a frame line longer than allowed".into())),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Frame::Truncated),
            Err(e) => return Err(e),
        };
        let garbled = || Frame::Garbled(String::from_utf8_lossy(&line).trim_end().to_owned());
        let Ok(text) = std::str::from_utf8(&line) else {
            return Ok(garbled());
        };
        let fields: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
        match fields.as_slice() {
            ["end", chunks, records, mac] => {
                let (Ok(chunks), Ok(records), Some(mac)) = (
                    chunks.parse::<u64>(),
                    records.parse::<u64>(),
                    crate::hex::decode32(mac),
                ) else {
                    return Ok(garbled());
                };
                let parts = end_parts(
                    &self.header_mac,
                    chunks.to_be_bytes(),
                    records.to_be_bytes(),
                );
                let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                Ok(Frame::End {
                    chunks,
                    records,
                    authentic: key.verify(&refs, &mac),
                })
            }
            ["chunk", seq, zlen, raw_len, crc, mac] => {
                let (Ok(seq), Ok(zlen), Ok(raw_len), Ok(crc), Some(mac)) = (
                    seq.parse::<u64>(),
                    zlen.parse::<u64>(),
                    raw_len.parse::<u64>(),
                    u32::from_str_radix(crc, 16),
                    crate::hex::decode32(mac),
                ) else {
                    return Ok(garbled());
                };
                if raw_len > MAX_RAW_CHUNK || zlen > MAX_RAW_CHUNK + (1 << 20) {
                    return Ok(garbled());
                }
                let mut z = Vec::new();
                (&mut self.input).take(zlen).read_to_end(&mut z)?;
                if (z.len() as u64) < zlen {
                    return Ok(Frame::Truncated);
                }
                let intact = crc32fast::hash(&z) == crc;
                let authentic = key.verify(
                    &[
                        b"chunk\0",
                        &self.header_mac,
                        &seq.to_be_bytes(),
                        &raw_len.to_be_bytes(),
                        &z,
                    ],
                    &mac,
                );
                Ok(Frame::Chunk(Chunk {
                    seq,
                    raw_len,
                    intact,
                    authentic,
                    z,
                }))
            }
            _ => Ok(garbled()),
        }
    }
}

/// One line with its `\n`, at most `max` bytes: `Ok(None)` when it is longer, an
/// `UnexpectedEof` error at the end of the input or inside a line.
fn read_line(input: &mut impl BufRead, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    input.take(max as u64).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        Ok(Some(line))
    } else if line.len() >= max {
        Ok(None)
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
mod tests;
