//! The connection driver's BDAT steps (RFC 3030): chunks of exact sizes read into the
//! transaction's content (`BdatIn`), with XFERRY's parts where the MAIL asked for them
//! (docs/xferry.md): what a resume key holds is claimed and offered in the 250 to MAIL,
//! and zstd content is decoded against the messages its XZSTD names. Every chunk is read
//! to its end whatever becomes of it, so the session stays in step.

use super::bdat_in::{BdatIn, Coding, Received};
use super::conn::{Conn, ContentClock, Ended};
use crate::ferry::partial::Partial;
use crate::smtp::bdat::BdatCheck;
use crate::smtp::reply::{self, Reply};

impl Conn {
    /// Reads one chunk of `size` octets (refused with `reject`, read all the same); at
    /// the `last`, the content is judged and committed, or refused.
    pub(super) async fn bdat(
        &mut self,
        size: u64,
        last: bool,
        reject: Option<Reply>,
    ) -> Result<(), Ended> {
        if reject.is_none() && self.bdat.is_none() {
            let binary = false; // BINARYMIME is refused at MAIL
            let max = self.ctx.session.max_message_size;
            let coding = self.coding();
            let intake = self.start_intake().await;
            let check = BdatCheck::new(binary, max);
            let held = self.resume.take();
            let referable = self.ctx.session.ferry;
            let content = BdatIn::start(intake, check, coding, max, held, referable).await;
            self.bdat = Some(content);
        }
        let mut remaining = size;
        let mut clock = ContentClock::new(&self.ctx.timeouts);
        loop {
            let take = remaining.min(self.input.len() as u64) as usize;
            if take > 0 {
                let chunk: Vec<u8> = self.input.drain(..take).collect();
                if let (None, Some(content)) = (&reject, self.bdat.as_mut()) {
                    content.push(&chunk).await;
                }
                remaining -= take as u64;
            }
            if remaining == 0 {
                break;
            }
            self.read_content(&mut clock).await?;
        }
        if let Some(r) = reject {
            self.reply(&r);
            return Ok(());
        }
        if !last {
            let received = reply::OK.with_text(format!("{size} octets received"));
            self.reply(&received);
            return Ok(());
        }
        self.session.message_done();
        let mut content = self.bdat.take().expect("set above");
        if content.bad_line_ending() {
            return self.close(&reply::BARE_LINE_ENDING).await;
        }
        if let Err(r) = content.verdict() {
            self.reply(&r);
            return Ok(());
        }
        let Received {
            intake,
            too_big,
            partial,
            small,
        } = content.finish();
        self.finish_resumed(intake, too_big, partial, small).await
    }

    /// How the transaction's BDAT content comes: plain, or zstd against the messages
    /// its XZSTD names.
    fn coding(&self) -> Coding {
        let refs = self
            .session
            .transaction()
            .and_then(|t| t.mail.zstd.as_ref());
        match refs {
            None => Coding::Plain,
            Some(ids) if ids.is_empty() => Coding::Zstd(Vec::new()),
            Some(ids) => match self.committed.lock().expect("not poisoned").get(ids) {
                Some(contents) => Coding::Zstd(crate::ferry::history::dictionary(
                    contents.iter().map(|c| c.as_slice()),
                )),
                None => Coding::UnknownRefs,
            },
        }
    }

    /// XFERRY: the MAIL asked to resume under `key`. The 250 says how many bytes are
    /// held for it (none when nothing is, or they cannot be kept).
    pub(super) async fn claim_resume(&mut self, key: crate::ferry::ResumeKey) -> Reply {
        let offered = match self.ctx.partials.clone() {
            Some(store) => {
                let k = key.clone();
                match tokio::task::spawn_blocking(move || store.claim(&k)).await {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(e)) => {
                        tracing::warn!(key = %key, error = %e, "cannot keep content for resuming");
                        None
                    }
                    Err(_) => None,
                }
            }
            None => None,
        };
        let offset = offered.as_ref().map_or(0, Partial::offset);
        self.resume = offered;
        reply::SENDER_OK.with_text(crate::ferry::resume_reply_text(&key, offset))
    }
}
