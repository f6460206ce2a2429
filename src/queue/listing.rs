//! Queue entries for drops still in the maildrop, beside the queue proper's entries
//! (`spool::reader` streams those from the index).

use crate::spool::maildrop::{is_drop_name, open_drop};
use crate::spool::reader::{QueueEntry, RecipientEntry};
use crate::spool::{Fs, Layout};

/// Drops in `maildrop/new` not yet picked up. Unreadable ones (another user's, or
/// damaged) are skipped: the daemon deals with those.
pub(crate) fn maildrop_entries(fs: &dyn Fs, layout: &Layout) -> Vec<QueueEntry> {
    let Ok(mut names) = fs.list_dir(&layout.maildrop_new) else {
        return Vec::new();
    };
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if !is_drop_name(&name) {
            continue;
        }
        let path = layout.maildrop_new.join(&name);
        let Ok(drop) = open_drop(fs, &path) else {
            continue;
        };
        let len = drop.len;
        out.push(QueueEntry {
            id: None,
            location: "maildrop",
            sender: drop.envelope.sender.to_string(),
            size: len.saturating_sub(drop.body_offset),
            received_at: drop.envelope.submitted_at,
            recipients: drop
                .envelope
                .recipients
                .into_iter()
                .map(|r| RecipientEntry {
                    address: r.address.to_string(),
                    state: None,
                    attempts: 0,
                    next_attempt_at: None,
                    online_age: 0,
                    last_reply: None,
                    last_host: None,
                    link_wait: false,
                })
                .collect(),
            file: Some(name),
            kept: false,
        });
    }
    out
}
