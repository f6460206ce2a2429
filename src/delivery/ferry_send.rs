//! A large message to a ferrymail node over XFERRY (docs/xferry.md). Its content goes
//! in pieces of `PIECE_RAW`, each its own BDAT chunk (zstd-compressed and flushed, so
//! the receiver decodes and keeps each one as it comes, when XZSTD is in use). With
//! XRESUME the transfer is named by our queue id and the content's SHA-256, and the
//! receiver's 250 to MAIL says how much of it it already holds: only the rest is sent.
//! An offer that cannot be right (for another key, or past the end) is declined: the
//! transaction starts over without XRESUME and the content goes whole. Small messages
//! go pipelined with the rest of their batch (`batch.rs`), compressed whole.

use tokio::io::AsyncReadExt;

use super::client::{Connection, Outgoing, finish, with_mail_params};
use super::content::unreadable;
use super::link_fit::{LinkFit, SLICE};
use super::outcome::{Classified, Event, Outcome, Phase, classify};
use crate::ferry::compress::Compressor;
use crate::ferry::{PARAM_RESUME, PARAM_ZSTD, ResumeKey, parse_resume_offer};
use crate::smtp::line::MAX_COMMAND_LINE;
use crate::smtp::response::Response;

/// Content bytes per BDAT chunk.
pub const PIECE_RAW: usize = 256 << 10;

impl Connection {
    /// Sends `m` (large, its content in a file) over XFERRY; the content is written
    /// only once `ready` is done. One outcome per recipient, as `send` gives.
    pub(super) async fn send_ferried(
        &mut self,
        m: &Outgoing<'_>,
        ready: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Classified>, Classified> {
        let ferry = self.ferry();
        let t = self.timeouts.clone();
        let total = m.content.len();
        let key = match ferry.resume {
            true => Some(resume_key(m).await?),
            false => None,
        };
        // Within RFC 5321 §4.5.3.1.4's 512 octets, or not resumable (a long sender and
        // ENVID leave less room).
        let key = key.filter(|k| {
            let zstd = if ferry.zstd { PARAM_ZSTD.len() + 1 } else { 0 };
            self.mail_line(m).len() + zstd + PARAM_RESUME.len() + k.as_str().len() + 2
                <= MAX_COMMAND_LINE
        });
        let head = self.ferry_envelope(m, ferry.zstd, key.as_ref());
        self.transactions += 1;
        self.write(head.as_bytes(), Phase::Mail, t.command).await?;
        let (mut mail, mut outcomes) = self.read_envelope(m).await?;
        let mut offset = 0;
        if let Some(key) = &key
            && mail.is_positive()
        {
            match parse_resume_offer(&mail.lines.join(" "), key) {
                Some(at) if at <= total => offset = at,
                offer => {
                    tracing::warn!(host = %self.host, key = %key, ?offer, "resume offer declined; sending whole");
                    let again = format!("RSET\r\n{}", self.ferry_envelope(m, ferry.zstd, None));
                    self.transactions += 1;
                    self.write(again.as_bytes(), Phase::Mail, t.command).await?;
                    let _rset = self.read(Phase::Mail, t.command).await?;
                    (mail, outcomes) = self.read_envelope(m).await?;
                }
            }
        }
        if !mail.is_positive() {
            return Ok(vec![
                classify(Phase::Mail, &Event::Reply(mail));
                m.recipients.len()
            ]);
        }
        if !outcomes.iter().any(|o| o.outcome == Outcome::Delivered) {
            self.reset().await?;
            return Ok(outcomes);
        }
        ready.await;
        if offset > 0 {
            tracing::info!(host = %self.host, id = m.id, offset, total, "resuming");
        }
        let chunks = self.write_pieces(m, offset, ferry.zstd).await?;
        let mut end: Option<Response> = None;
        for k in 0..chunks {
            let r = self.read(Phase::EndOfData, t.end_of_data).await?;
            // The first refusal decides; else the last chunk's reply does.
            if end.as_ref().is_none_or(|e| e.is_positive()) && (!r.is_positive() || k + 1 == chunks)
            {
                end = Some(r);
            }
        }
        let end = end.expect("at least one chunk");
        if !end.is_positive() {
            self.reset().await?;
        }
        Ok(finish(
            outcomes,
            Some(classify(Phase::EndOfData, &Event::Reply(end))),
        ))
    }

    /// MAIL (with XZSTD and XRESUME as asked) and every RCPT, as one write.
    fn ferry_envelope(&self, m: &Outgoing<'_>, zstd: bool, key: Option<&ResumeKey>) -> String {
        let mut params = String::new();
        if zstd {
            params.push_str(&format!(" {PARAM_ZSTD}"));
        }
        if let Some(key) = key {
            params.push_str(&format!(" {PARAM_RESUME}={key}"));
        }
        with_mail_params(&self.envelope(m), &params)
    }

    /// The replies to MAIL and to each RCPT.
    async fn read_envelope(
        &mut self,
        m: &Outgoing<'_>,
    ) -> Result<(Response, Vec<Classified>), Classified> {
        let timeout = self.timeouts.command;
        let mail = self.read(Phase::Mail, timeout).await?;
        let mut outcomes = Vec::with_capacity(m.recipients.len());
        for _ in m.recipients {
            let r = self.read(Phase::Rcpt, timeout).await?;
            outcomes.push(classify(Phase::Rcpt, &Event::Reply(r)));
        }
        Ok((mail, outcomes))
    }

    /// Writes the content from `offset` as BDAT chunks; returns how many.
    async fn write_pieces(
        &mut self,
        m: &Outgoing<'_>,
        offset: u64,
        zstd: bool,
    ) -> Result<usize, Classified> {
        let mut fit = self.take_fit();
        let written = self.write_pieces_fitted(m, offset, zstd, &mut fit).await;
        self.keep_fit(fit);
        written
    }

    async fn write_pieces_fitted(
        &mut self,
        m: &Outgoing<'_>,
        offset: u64,
        zstd: bool,
        fit: &mut Option<LinkFit>,
    ) -> Result<usize, Classified> {
        let timeout = self.timeouts.data_block;
        let mut remaining = m.content.len() - offset;
        let chunks = remaining.div_ceil(PIECE_RAW as u64).max(1) as usize;
        let mut reader = m
            .content
            .reader_from(offset)
            .await
            .map_err(|e| unreadable(&e))?;
        let mut compressor = match zstd {
            true => Some(Compressor::new().map_err(|e| unreadable(&e))?),
            false => None,
        };
        let mut piece = vec![0u8; PIECE_RAW];
        let mut packed = Vec::new();
        let mut wire = Vec::new();
        for k in 0..chunks {
            let want = remaining.min(PIECE_RAW as u64) as usize;
            reader
                .read_exact(&mut piece[..want])
                .await
                .map_err(|e| unreadable(&e))?;
            remaining -= want as u64;
            let last = k + 1 == chunks;
            let body = match compressor.as_mut() {
                Some(c) => {
                    packed.clear();
                    c.piece(&piece[..want], last, &mut packed)
                        .map_err(|e| unreadable(&e))?;
                    &packed[..]
                }
                None => &piece[..want],
            };
            wire.clear();
            let tail = if last { " LAST" } else { "" };
            wire.extend_from_slice(format!("BDAT {}{tail}\r\n", body.len()).as_bytes());
            wire.extend_from_slice(body);
            for slice in wire.chunks(SLICE) {
                if let Some(fit) = fit.as_mut() {
                    let deadline = tokio::time::Instant::now() + timeout;
                    let late = || tokio::time::Instant::now() >= deadline;
                    if !fit.room_for(slice.len(), late).await {
                        let why = "no room on the link in time".to_owned();
                        return Err(classify(Phase::EndOfData, &Event::Broken(why)));
                    }
                }
                self.write_raw(slice, Phase::EndOfData, timeout).await?;
            }
        }
        self.write(b"", Phase::EndOfData, timeout).await?;
        Ok(chunks)
    }
}

/// The transfer's name: our queue id and the SHA-256 of the content as it is sent.
async fn resume_key(m: &Outgoing<'_>) -> Result<ResumeKey, Classified> {
    let mut reader = m.content.reader().await.map_err(|e| unreadable(&e))?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| unreadable(&e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    let digest: [u8; 32] = hash
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes");
    Ok(ResumeKey::new(m.id, &digest))
}
