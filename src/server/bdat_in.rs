//! One BDAT transaction's content on its way in (RFC 3030), with XFERRY's parts where
//! the MAIL asked for them (docs/xferry.md): zstd content decoded within bounds
//! (`ferry::decompress`), and for a resumable transfer the bytes held from an earlier
//! connection replayed first, then every new byte kept (`ferry::partial`) as it passes
//! on. Line endings and size are checked on the decoded bytes, as for plain content.
//! Nothing is committed here: the connection does that once `verdict` says yes.

use super::intake::Intake;
use crate::ferry::decompress::{Decompressor, Refusal};
use crate::ferry::partial::Partial;
use crate::smtp::bdat::BdatCheck;
use crate::smtp::reply::{self, Reply};

/// Held bytes replayed at a time.
const REPLAY_PIECE: usize = 256 << 10;

/// How the transaction's content comes.
pub enum Coding {
    Plain,
    /// zstd, against this dictionary (the referenced messages' contents; may be empty).
    Zstd(Vec<u8>),
    /// zstd against messages this connection no longer keeps: it cannot be decoded.
    UnknownRefs,
}

pub struct BdatIn {
    intake: Intake,
    check: BdatCheck,
    zstd: Option<Decompressor>,
    partial: Option<Partial>,
    /// The held bytes could not be read back: the content cannot be whole.
    replay_failed: bool,
    unknown_refs: bool,
    decoded: Vec<u8>,
    /// The content as it came, while it is small enough to be referred to later.
    small: Option<Vec<u8>>,
}

/// What `finish` hands back at the last chunk.
pub struct Received {
    pub intake: Intake,
    pub too_big: bool,
    pub partial: Option<Partial>,
    /// The whole content, when it is small enough for XZSTD to refer to.
    pub small: Option<Vec<u8>>,
}

impl BdatIn {
    /// Starts the content, coming as `coding` says; with `partial`, its held bytes go
    /// first. With `referable` (an XFERRY listener), a small content is kept for later
    /// messages to refer to.
    pub async fn start(
        intake: Intake,
        check: BdatCheck,
        coding: Coding,
        max_size: u64,
        partial: Option<Partial>,
        referable: bool,
    ) -> BdatIn {
        let mut unknown_refs = false;
        let zstd = match coding {
            Coding::Plain => None,
            Coding::UnknownRefs => {
                unknown_refs = true;
                None
            }
            Coding::Zstd(dictionary) => match Decompressor::new(max_size, &dictionary) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(error = %e, "zstd decoder");
                    unknown_refs = true;
                    None
                }
            },
        };
        let mut this = BdatIn {
            intake,
            check,
            zstd,
            partial: None,
            replay_failed: false,
            unknown_refs,
            decoded: Vec::new(),
            small: referable.then(Vec::new),
        };
        if let Some(p) = partial {
            this.partial = this.replay(p).await;
        }
        this
    }

    async fn replay(&mut self, mut partial: Partial) -> Option<Partial> {
        loop {
            let read = tokio::task::spawn_blocking(move || {
                let piece = partial.replay(REPLAY_PIECE);
                (partial, piece)
            })
            .await;
            let (p, piece) = match read {
                Ok(r) => r,
                Err(_) => {
                    self.replay_failed = true;
                    return None;
                }
            };
            partial = p;
            match piece {
                Ok(bytes) if bytes.is_empty() => return Some(partial),
                Ok(bytes) => self.pass_on(&bytes).await,
                Err(e) => {
                    tracing::warn!(key = %partial.key(), error = %e, "held content unreadable");
                    self.replay_failed = true;
                    partial.remove();
                    return None;
                }
            }
        }
    }

    /// Bytes of a chunk as they came off the wire.
    pub async fn push(&mut self, wire: &[u8]) {
        if self.unknown_refs {
            return; // read and dropped: it cannot be decoded
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        let raw = match self.zstd.as_mut() {
            Some(d) => {
                d.feed(wire, &mut decoded);
                &decoded[..]
            }
            None => wire,
        };
        if let Some(p) = self.partial.as_mut()
            && p.append(raw)
        {
            self.write_partial().await;
        }
        self.pass_on(raw).await;
        self.decoded = decoded;
    }

    async fn pass_on(&mut self, raw: &[u8]) {
        if let Some(small) = self.small.as_mut() {
            if small.len() + raw.len() <= crate::ferry::history::ITEM_MAX {
                small.extend_from_slice(raw);
            } else {
                self.small = None;
            }
        }
        let kept = self.check.feed(raw);
        self.intake.push(kept).await;
    }

    async fn write_partial(&mut self) {
        let Some(mut p) = self.partial.take() else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            let r = p.write_pending(false);
            (p, r)
        })
        .await;
        match written {
            Ok((p, Ok(()))) => self.partial = Some(p),
            Ok((p, Err(e))) => {
                tracing::warn!(key = %p.key(), error = %e, "partial content not kept");
                p.remove();
            }
            Err(_) => {}
        }
    }

    /// What arrives is kept for a resume.
    pub(crate) fn keeps_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// A bare CR or LF was seen (RFC 5321 §2.3.8): the session is closed for it.
    pub(crate) fn bad_line_ending(&self) -> bool {
        self.check.bad_line_ending()
    }

    /// After the last chunk: the reply that refuses the content, if it is refused
    /// before the intake's own checks. A mismatched partial is removed.
    pub fn verdict(&mut self) -> Result<(), Reply> {
        if self.unknown_refs {
            return Err(reply::UNKNOWN_REFERENCE);
        }
        if let Some(d) = &self.zstd {
            match d.verdict() {
                Ok(()) => {}
                Err(Refusal::TooBig) => return Err(reply::MESSAGE_TOO_BIG),
                Err(Refusal::Ratio) => return Err(reply::COMPRESSION_BOMB),
                Err(Refusal::Malformed) => return Err(reply::COMPRESSION_MALFORMED),
            }
        }
        if self.replay_failed {
            return Err(reply::LOCAL_ERROR);
        }
        if self.partial.as_ref().is_some_and(|p| !p.matches()) {
            if let Some(p) = self.partial.take() {
                tracing::warn!(key = %p.key(), "resumed content does not match its key");
                p.remove();
            }
            return Err(reply::RESUME_MISMATCH);
        }
        Ok(())
    }

    pub fn finish(self) -> Received {
        Received {
            too_big: self.check.too_big(),
            intake: self.intake,
            partial: self.partial,
            small: self.small,
        }
    }

    /// The connection ends mid-transfer: what came is written and synced off the
    /// runtime, for the next connection to resume from.
    pub async fn keep(mut self) {
        if let Some(p) = self.partial.take() {
            let _ = tokio::task::spawn_blocking(move || drop(p)).await;
        }
    }
}
