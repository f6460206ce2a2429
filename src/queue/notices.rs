//! Delivery status notifications leave through the normal queue: built here as a sealed
//! draft (`delivery::dsn` writes it, the original streamed from its spool file), then
//! committed by the spool writer in the same transaction as the outcomes it reports, as
//! a message from the null sender to the original sender. Only the lines the sender
//! asked for go in (RFC 3461 NOTIFY); a notice nobody wants is not written. A failure
//! returns the whole message only when RET=FULL asked for it and the sender is known
//! (`NoticeSettings::sender_known`); every other notice carries the headers only. The null
//! sender gets no notice (RFC 5321 §4.5.5): when a notice itself fails (a double
//! bounce), it goes to the admin address if there is one, and is otherwise kept in the
//! queue for the operator; a double bounce to the admin that fails too is kept. Never
//! dropped silently, never looped. Blocking: run on a blocking thread.

use std::io::Write;

use super::settle::NoticeRequest;
use crate::config::IpNet;
use crate::delivery::dsn::{self, Action, Line, NoticeKind, Original, Reported};
use crate::smtp::{Mailbox, ReversePath};
use crate::spool::envelope::{About, BodyReader, read_envelope, read_stored};
use crate::spool::{
    Draft, Envelope, Origin, OriginKind, QueueId, Recipient, Sealed, Spool, SpoolError, now_unix,
};

/// A notice written, waiting to be committed with the outcomes it reports.
pub struct Built {
    pub sealed: Sealed,
    /// For the log once it is queued.
    pub about: QueueId,
    pub to: Mailbox,
    pub kind: NoticeKind,
}

/// Who notices come from and where double bounces go.
#[derive(Clone, Debug)]
pub struct NoticeSettings {
    /// Our name, in the notices' From, Message-ID and Reporting-MTA.
    pub hostname: String,
    /// A notice to a local name goes where its mail goes; a double bounce goes to its
    /// admin address, or stays in the queue without one.
    pub identity: std::sync::Arc<crate::identity::Identity>,
    /// `accept.relay_networks`: a failure notice returns the whole message (RET=FULL)
    /// only to mail from these clients, authenticated ones, or local submissions.
    pub relay_networks: Vec<IpNet>,
}

impl NoticeSettings {
    /// Whether the message's sender is known: it came from a local user, an
    /// authenticated client, a client in `relay_networks`, or ourselves. Anyone else may
    /// have forged it, and a bounce to a forged sender is backscatter: it gets the
    /// message's headers only, whatever RET asked.
    fn sender_known(&self, origin: &Origin) -> bool {
        if origin.kind != OriginKind::Smtp || origin.auth.is_some() {
            return true;
        }
        origin
            .client
            .as_deref()
            .and_then(|c| c.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| self.relay_networks.iter().any(|net| net.contains(ip)))
    }
}

/// What a notice request comes to.
pub enum Fate {
    Built(Box<Built>),
    /// Nobody asked for one (NOTIFY).
    NotWanted,
    /// A double bounce nobody can receive: the failed message stays in the queue.
    Kept,
}

/// Builds the notice `request` calls for. A message whose file is damaged gets a notice
/// without its content, from what of its envelope can be read (`damaged`).
pub fn build(
    spool: &Spool,
    settings: &NoticeSettings,
    request: &NoticeRequest,
    damaged: bool,
) -> Result<Fate, String> {
    let hostname = settings.hostname.as_str();
    let fs = spool.fs().as_ref();
    let path = spool.layout().message_path(request.id);
    let (envelope, stored) = if damaged {
        (read_envelope(fs, &path).map_err(|e| e.to_string())?, None)
    } else {
        let stored = read_stored(fs, &path).map_err(|e| e.to_string())?;
        (stored.envelope.clone(), Some(stored))
    };
    let report = |line| report(&envelope, line);
    let (to, reports): (&Mailbox, Vec<Reported<'_>>) =
        if let Some(sender) = envelope.sender.mailbox() {
            let wanted: Vec<Reported<'_>> = request
                .lines
                .iter()
                .filter_map(report)
                .filter(|r| dsn::wanted(&envelope, r.recipient, r.action))
                .collect();
            if wanted.is_empty() {
                tracing::info!(id = %request.id, "no DSN: NOTIFY did not ask for one");
                return Ok(Fate::NotWanted);
            }
            (sender, wanted)
        } else {
            let failed: Vec<Reported<'_>> = request
                .lines
                .iter()
                .filter(|l| l.action == Action::Failed)
                .filter_map(report)
                .collect();
            if failed.is_empty() {
                return Ok(Fate::NotWanted);
            }
            match settings.identity.local.admin() {
                Some(admin) if envelope.origin.kind != OriginKind::DoubleBounce => (admin, failed),
                _ => return Ok(Fate::Kept),
            }
        };
    let kind = NoticeKind::of(&envelope, &reports);
    let failed = reports.iter().any(|r| r.action == Action::Failed);
    let notice = Envelope {
        smtputf8: envelope.smtputf8,
        ..Envelope::new(
            ReversePath::Null,
            settings
                .identity
                .local
                .resolve(vec![Recipient::new(to.clone())]),
            Origin {
                kind: if kind == NoticeKind::DoubleBounce {
                    OriginKind::DoubleBounce
                } else {
                    OriginKind::Dsn
                },
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
                to,
                &reports,
                Original::Nothing,
                dsn_id,
            ),
            Some(stored) => {
                let mut original =
                    BodyReader::open(fs, &path, stored).map_err(|e| e.to_string())?;
                // The whole original only for a failure, only when asked (RET=FULL), and
                // only to a sender we know (RFC 3461 §4.3 lets us send less).
                let full = failed
                    && envelope.ret == Some(crate::smtp::Ret::Full)
                    && settings.sender_known(&envelope.origin);
                let original = if full {
                    Original::Full(&mut original, stored.trailer.eight_bit)
                } else {
                    Original::Headers(&mut original)
                };
                write(
                    &mut out, hostname, &envelope, to, &reports, original, dsn_id,
                )
            }
        }
    };
    written.map_err(|e| e.to_string())?;
    let sealed = draft.seal().map_err(|e| e.to_string())?;
    Ok(Fate::Built(Box::new(Built {
        sealed,
        about: request.id,
        to: to.clone(),
        kind,
    })))
}

fn write(
    out: &mut DraftWriter<'_>,
    hostname: &str,
    envelope: &Envelope,
    to: &Mailbox,
    reports: &[Reported<'_>],
    original: Original<'_>,
    id: QueueId,
) -> std::io::Result<()> {
    dsn::write_to(
        out,
        hostname,
        envelope,
        &to.to_string(),
        reports,
        original,
        now_unix(),
        id.as_str(),
    )
}

/// One line of a notice: `line` about its recipient in `envelope`.
fn report<'a>(envelope: &'a Envelope, line: &'a Line) -> Option<Reported<'a>> {
    Some(Reported {
        recipient: envelope.recipients.get(line.position)?,
        action: line.action,
        status: &line.status,
        remote_mta: line.remote_mta.as_deref(),
        diagnostic: &line.diagnostic,
    })
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
