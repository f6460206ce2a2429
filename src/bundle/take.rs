//! Taking one message from a bundle: what its importer checks and commits. Recipients
//! this node took before are duplicates; the rest are refused for a reason a sender can
//! act on (a bad address, too large, too many hops, a route straight back to the node
//! that sent it), or committed through the spool as pickup commits a drop: identity
//! settled (local names, aliases, sender rewriting, DKIM), a `Received:` added, the
//! content canonicalised to CRLF and its long lines folded. A commit that fails (a full
//! disk) takes nothing: the message comes again in a later bundle.

use std::sync::Arc;

use super::format::Header;
use super::peers::Peers;
use super::record::{MessageRecord, Refused, sha256};
use crate::identity::Identity;
use crate::identity::incoming::Incoming;
use crate::smtp::ReversePath;
use crate::spool::{
    BundleOrigin, Envelope, IndexReader, Origin, OriginKind, QueueId, Spool, SpoolError,
};

/// RFC 5321 §6.3: a message with this many `Received:` fields is in a loop.
pub const MAX_HOPS: usize = 100;

/// What an import needs of the daemon.
pub struct Site {
    pub spool: Spool,
    pub peers: Arc<Peers>,
    pub identity: Arc<Identity>,
    pub hostname: String,
    pub max_message_size: u64,
    /// Where mail goes from here (a recipient routed straight back is refused).
    pub router: crate::delivery::route::Router,
}

/// What became of one message's recipients (positions at the exporting node).
#[derive(Debug, Default)]
pub struct Taken {
    /// The exporter's queue id.
    pub id: String,
    pub committed: Vec<usize>,
    pub duplicates: Vec<usize>,
    pub refused: Vec<Refused>,
    /// Why some were not taken now (they come again).
    pub unread: Vec<String>,
}

pub fn take_message(
    site: &Site,
    header: &Header,
    index: Option<&IndexReader>,
    record: &MessageRecord,
    content: &[u8],
) -> Taken {
    let mut taken = Taken {
        id: record.id.clone(),
        ..Taken::default()
    };
    let before = match index.map(|i| i.imported_positions(&header.node, &record.id)) {
        Some(Ok(p)) => p,
        None => Vec::new(),
        Some(Err(e)) => {
            taken
                .unread
                .push(format!("message {}: not taken now: {e}", record.id));
            return taken;
        }
    };
    let mut fresh = Vec::new();
    for r in &record.recipients {
        if before.contains(&r.position) {
            taken.duplicates.push(r.position);
        } else {
            fresh.push(r);
        }
    }
    let refuse = |taken: &mut Taken, position: usize, status: &str, reason: String| {
        taken.refused.push(Refused {
            id: record.id.clone(),
            position,
            status: status.into(),
            reason,
        })
    };
    let sender = match whole_refusal(site, record, content) {
        Ok(sender) => sender,
        Err((status, reason)) => {
            for r in fresh {
                refuse(&mut taken, r.position, status, reason.clone());
            }
            return taken;
        }
    };
    let mut keep = Vec::new();
    for r in fresh {
        let recipient = match r.to_recipient() {
            Ok(recipient) => recipient,
            Err((status, reason)) => {
                refuse(&mut taken, r.position, status, reason);
                continue;
            }
        };
        let mailbox = &recipient.address;
        let domain = mailbox.domain().to_ascii_lowercase();
        let route = &site.router.route(&domain).name;
        if !site.router.is_local(&domain)
            && site
                .peers
                .for_route(route)
                .is_some_and(|p| p.node.eq_ignore_ascii_case(&header.node))
        {
            let reason = format!(
                "mail for {mailbox} would go straight back to {}",
                header.node
            );
            refuse(&mut taken, r.position, "5.4.6", reason);
            continue;
        }
        keep.push((r.position, recipient));
    }
    if keep.is_empty() {
        return taken;
    }
    let origin = Origin {
        kind: OriginKind::Bundle,
        bundle: Some(BundleOrigin {
            node: header.node.clone(),
            bundle: header.id.clone(),
            message: record.id.clone(),
            positions: keep.iter().map(|(position, _)| *position).collect(),
        }),
        ..Origin::default()
    };
    let mut envelope = Envelope {
        body: record.body,
        smtputf8: record.smtputf8,
        envid: record.envid.clone(),
        ret: record.ret,
        ..Envelope::new(
            sender,
            keep.iter().map(|(_, r)| r.clone()).collect(),
            origin,
        )
    };
    match commit(site, header, &mut envelope, content) {
        Ok(Some(_)) => taken.committed = keep.iter().map(|(position, _)| *position).collect(),
        Ok(None) => {
            for (position, _) in keep {
                refuse(
                    &mut taken,
                    position,
                    "5.6.0",
                    "the message holds a NUL byte".into(),
                );
            }
        }
        Err(e) => taken
            .unread
            .push(format!("message {}: not taken now: {e}", record.id)),
    }
    taken
}

/// The message's sender, or why the whole message is refused (an RFC 3463 status and a
/// reason): content that does not match its checksum, is too large, has looped, or a
/// sender that is no address.
fn whole_refusal(
    site: &Site,
    record: &MessageRecord,
    content: &[u8],
) -> Result<ReversePath, (&'static str, String)> {
    if sha256(content) != record.sha256 {
        return Err((
            "5.6.0",
            "the content does not match its checksum".to_owned(),
        ));
    }
    if content.len() as u64 > site.max_message_size {
        return Err((
            "5.3.4",
            format!("message larger than {} bytes", site.max_message_size),
        ));
    }
    if hops(content) >= MAX_HOPS {
        return Err((
            "5.4.6",
            format!("{MAX_HOPS} or more Received: fields: a mail loop"),
        ));
    }
    ReversePath::parse(&record.sender)
        .map_err(|_| ("5.1.7", format!("bad sender address {:?}", record.sender)))
}

/// `Received:` fields in the header section.
fn hops(content: &[u8]) -> usize {
    let mut n = 0;
    for line in content.split(|&b| b == b'\n') {
        if line == b"\r" || line.is_empty() {
            break;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            n += 1;
        }
    }
    n
}

/// Commits the message; `None` when its content holds a NUL byte.
fn commit(
    site: &Site,
    header: &Header,
    envelope: &mut Envelope,
    content: &[u8],
) -> Result<Option<QueueId>, SpoolError> {
    let mut incoming = Incoming::new(site.identity.prepare(envelope));
    let mut draft = site.spool.create_draft(envelope.clone())?;
    let trace = format!(
        "Received: from {} (bundle {})\r\n\tby {} (ferrymail) with bundle id {}; {}\r\n",
        header.node,
        header.id,
        site.hostname,
        draft.id(),
        crate::smtp::date::now()
    );
    draft.write(trace.as_bytes())?;
    incoming.written(trace.as_bytes());
    for piece in content.chunks(64 << 10) {
        let Ok(piece) = incoming.push(piece) else {
            return Ok(None);
        };
        draft.write(piece)?;
    }
    draft.write(incoming.finish())?;
    let prepend = incoming.prepend(draft.id().as_str());
    site.spool
        .commit_blocking(draft.seal_prepending(prepend)?)
        .map(Some)
}
