//! Batched SMTP on stdin (`sendmail -bS`), as Exim writes it with `use_bsmtp` and UUCP
//! sites fed `rsmtp`: each complete transaction becomes a maildrop file with its whole
//! envelope (sender as given, recipients with NOTIFY and ORCPT, ENVID, RET), durable
//! before the next is read, so a batch cut short keeps what came before the cut. A bad
//! transaction is reported on stderr with its line, and the rest of the batch still
//! goes. The message is relayed mail, not a submission: no header is added or removed
//! (pickup adds its `Received:`).

use crate::bundle::bsmtp::{self, Fault};
use crate::exit::{self, Failure};
use crate::inject::Site;
use crate::smtp::canon::CrlfCanon;
use crate::spool::maildrop::{DropEnvelope, DropWriter, MAX_DROP_RECIPIENTS};
use crate::spool::now_unix;

/// What a batch came to.
#[derive(Debug, Default)]
pub struct Batch {
    /// Maildrop files written, one per transaction.
    pub queued: usize,
    pub faults: Vec<Fault>,
}

/// Reads a batch from `input` into the maildrop.
pub(crate) fn inject_batch(
    input: &mut dyn std::io::BufRead,
    site: &Site<'_>,
) -> Result<Batch, Failure> {
    let mut batch = Batch::default();
    let io =
        |e: std::io::Error| Failure::new(exit::CANTCREAT, format!("writing to the maildrop: {e}"));
    let mut refused = Vec::new();
    let faults = bsmtp::read(input, site.max_message_size, &mut |t| {
        if t.recipients.len() > MAX_DROP_RECIPIENTS {
            refused.push(Fault {
                line: t.line,
                message: format!("more than {MAX_DROP_RECIPIENTS} recipients"),
            });
            return Ok(());
        }
        let envelope = DropEnvelope {
            sender: t.sender,
            recipients: t.recipients,
            envid: t.envid,
            ret: t.ret,
            submitted_at: now_unix(),
        };
        let mut canon = CrlfCanon::new();
        let mut out = Vec::with_capacity(t.content.len() + 2);
        if canon.push(&t.content, &mut out).is_err() {
            refused.push(Fault {
                line: t.line,
                message: "the message contains a NUL byte".into(),
            });
            return Ok(());
        }
        canon.finish(&mut out);
        let mut drop = DropWriter::create(site.fs, site.layout, &envelope)?;
        drop.write_all(&out)?;
        drop.finish()?;
        batch.queued += 1;
        Ok(())
    })
    .map_err(io)?;
    batch.faults = faults;
    batch.faults.extend(refused);
    batch.faults.sort_by_key(|f| f.line);
    Ok(batch)
}
