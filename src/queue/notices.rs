//! Delivery status notifications leave through the normal queue: built here as a sealed
//! draft (`delivery::dsn` writes it, the original streamed from its spool file), then
//! committed by the spool writer in the same transaction as the outcomes it reports, as
//! a message from the null sender to the original sender. Only the lines the sender
//! asked for go in (RFC 3461 NOTIFY); a notice nobody wants is not written. A notice
//! about a notice never exists (the null sender gets none). Blocking: run on a blocking
//! thread.

use std::io::Write;

use super::settle::NoticeRequest;
use crate::delivery::dsn::{self, Action, Original, Reported};
use crate::spool::envelope::{About, BodyReader, read_envelope, read_stored};
use crate::spool::{
    Draft, Envelope, Origin, QueueId, Recipient, Sealed, Spool, SpoolError, now_unix,
};

/// A notice written, waiting to be committed with the outcomes it reports.
pub struct Built {
    pub sealed: Sealed,
    /// For the log once it is queued.
    pub about: QueueId,
    pub to: String,
    pub kind: &'static str,
}

/// Builds the notice `request` calls for. `Ok(None)`: nobody wants one. A message whose
/// file is damaged gets a notice without its content, from what of its envelope can
/// be read (`damaged`).
pub fn build(
    spool: &Spool,
    hostname: &str,
    request: &NoticeRequest,
    damaged: bool,
) -> Result<Option<Built>, String> {
    let fs = spool.fs().as_ref();
    let path = spool.layout().message_path(request.id);
    let (envelope, stored) = if damaged {
        (read_envelope(fs, &path).map_err(|e| e.to_string())?, None)
    } else {
        let stored = read_stored(fs, &path).map_err(|e| e.to_string())?;
        (stored.envelope.clone(), Some(stored))
    };
    let reports: Vec<Reported<'_>> = request
        .lines
        .iter()
        .filter_map(|line| {
            let recipient = envelope.recipients.get(line.position)?;
            dsn::wanted(&envelope, recipient, line.action).then_some(Reported {
                recipient,
                action: line.action,
                status: &line.status,
                remote_mta: line.remote_mta.as_deref(),
                diagnostic: &line.diagnostic,
            })
        })
        .collect();
    if reports.is_empty() {
        if envelope.sender.is_empty() {
            tracing::warn!(id = %request.id, "no DSN for a message from the null sender");
        } else {
            tracing::info!(id = %request.id, "no DSN: NOTIFY did not ask for one");
        }
        return Ok(None);
    }
    let failed = reports.iter().any(|r| r.action == Action::Failed);
    let notice = Envelope {
        smtputf8: envelope.smtputf8,
        ..Envelope::new(
            "",
            vec![Recipient::new(envelope.sender.clone())],
            Origin {
                kind: "dsn".into(),
                about: Some(about(request)),
                ..Origin::default()
            },
        )
    };
    let dsn_id = notice.id;
    let mut draft = spool.create_draft(notice).map_err(|e| e.to_string())?;
    let written = {
        let mut out = DraftWriter(&mut draft);
        match &stored {
            None => write(
                &mut out,
                hostname,
                &envelope,
                &reports,
                Original::Nothing,
                dsn_id,
            ),
            Some(stored) => {
                let mut original =
                    BodyReader::open(fs, &path, stored).map_err(|e| e.to_string())?;
                // The whole original only for a failure, and only when asked (RET=FULL).
                let original = if failed && envelope.ret == Some(crate::spool::Ret::Full) {
                    Original::Full(&mut original, stored.trailer.eight_bit)
                } else {
                    Original::Headers(&mut original)
                };
                write(&mut out, hostname, &envelope, &reports, original, dsn_id)
            }
        }
    };
    written.map_err(|e| e.to_string())?;
    let kind = if failed {
        "failure"
    } else if reports.iter().any(|r| r.action == Action::Delayed) {
        "delay"
    } else {
        "success"
    };
    let sealed = draft.seal().map_err(|e| e.to_string())?;
    Ok(Some(Built {
        sealed,
        about: request.id,
        to: envelope.sender,
        kind,
    }))
}

fn write(
    out: &mut DraftWriter<'_>,
    hostname: &str,
    envelope: &Envelope,
    reports: &[Reported<'_>],
    original: Original<'_>,
    id: QueueId,
) -> std::io::Result<()> {
    dsn::write_to(
        out,
        hostname,
        envelope,
        reports,
        original,
        now_unix(),
        id.as_str(),
    )
}

/// What a notice reports, for recovery to tell whether its transaction committed.
fn about(request: &NoticeRequest) -> About {
    let positions = |action: Action| -> Vec<usize> {
        request
            .lines
            .iter()
            .filter(|l| l.action == action)
            .map(|l| l.position)
            .collect()
    };
    About {
        id: request.id,
        failed: positions(Action::Failed),
        delayed: positions(Action::Delayed),
        relayed: positions(Action::Relayed),
    }
}

/// A draft as an `io::Write`.
struct DraftWriter<'a>(&'a mut Draft);

impl Write for DraftWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(spool_io)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn spool_io(e: SpoolError) -> std::io::Error {
    std::io::Error::other(e)
}
