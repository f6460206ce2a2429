//! Delivery status notifications leave through the normal queue: built (`delivery::dsn`),
//! committed as a message from the null sender to the original sender, and delivered
//! like any other. Only the lines the sender asked for go in (RFC 3461 NOTIFY); a notice
//! nobody wants is not written. A notice about a notice never exists (the null sender
//! gets none), so a failing one is logged loudly and dropped, never looped.

use crate::delivery::dsn::{self, Action, Notice, Reported};
use crate::spool::{Envelope, Origin, QueueId, Recipient, Spool, now_unix};

/// Commits `notice`'s wanted lines as a DSN. Returns false only when one was wanted and
/// could not be queued (logged).
pub async fn send(spool: &Spool, hostname: &str, notice: Notice) -> bool {
    let id = notice.envelope.id;
    let reports: Vec<Reported<'_>> = notice
        .lines
        .iter()
        .filter_map(|line| {
            let recipient = notice.envelope.recipients.get(line.position)?;
            dsn::wanted(&notice.envelope, recipient, line.action).then(|| Reported {
                recipient,
                action: line.action,
                status: &line.status,
                remote_mta: line.remote_mta.as_deref(),
                diagnostic: &line.diagnostic,
            })
        })
        .collect();
    if reports.is_empty() {
        if notice.envelope.sender.is_empty() {
            tracing::warn!(id = %id, "no DSN for a message from the null sender");
        } else {
            tracing::info!(id = %id, "no DSN: NOTIFY did not ask for one");
        }
        return true;
    }
    let dsn_id = QueueId::generate(std::time::SystemTime::now());
    let content = dsn::build(
        hostname,
        &notice.envelope,
        &reports,
        &notice.content,
        now_unix(),
        dsn_id.as_str(),
    );
    let kind = if reports.iter().any(|r| r.action == Action::Failed) {
        "failure"
    } else if reports.iter().any(|r| r.action == Action::Delayed) {
        "delay"
    } else {
        "success"
    };
    let envelope = Envelope {
        id: dsn_id,
        smtputf8: notice.envelope.smtputf8,
        ..Envelope::new(
            "",
            vec![Recipient::new(notice.envelope.sender.clone())],
            Origin {
                kind: "dsn".into(),
                ..Origin::default()
            },
        )
    };
    let sender = notice.envelope.sender.clone();
    let writer = spool.clone();
    let sealed = tokio::task::spawn_blocking(move || {
        let mut draft = writer.create_draft(envelope)?;
        draft.write(&content)?;
        draft.seal()
    })
    .await;
    let failure = match sealed {
        Ok(Ok(sealed)) => match spool.commit(sealed).await {
            Ok(queued) => {
                tracing::info!(id = %id, dsn = %queued, to = %sender, kind, "DSN queued");
                return true;
            }
            Err(e) => e.to_string(),
        },
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(id = %id, error = %failure, kind, "DSN could not be queued");
    false
}
