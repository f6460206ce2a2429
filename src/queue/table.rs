//! The human queue listing, in the spirit of Postfix's `mailq`: one block per message
//! (id, age, size, sender) with a line per recipient and its state, then a summary.
//! Text from outside (addresses, replies) is shown `printable`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::printable::printable;
use crate::spool::RecipientState;
use crate::spool::reader::QueueEntry;

/// Writes entries one by one and keeps the counts for the summary line.
pub struct Table<W: Write> {
    out: W,
    now: i64,
    messages: u64,
    bytes: u64,
    states: BTreeMap<String, u64>,
}

impl<W: Write> Table<W> {
    pub fn new(out: W, now: i64) -> Table<W> {
        Table {
            out,
            now,
            messages: 0,
            bytes: 0,
            states: BTreeMap::new(),
        }
    }

    pub fn entry(&mut self, e: &QueueEntry) -> io::Result<()> {
        if self.messages == 0 {
            writeln!(
                self.out,
                "{:<16}  {:>5}  {:>7}  Sender",
                "Queue ID", "Age", "Size"
            )?;
        }
        self.messages += 1;
        self.bytes += e.size;
        let id = e.id.as_deref().unwrap_or("(maildrop)");
        let sender = if e.sender.is_empty() {
            "<>".to_owned()
        } else {
            format!("<{}>", printable(&e.sender))
        };
        writeln!(
            self.out,
            "{:<16}  {:>5}  {:>7}  {}",
            id,
            age(self.now - e.received_at),
            size(e.size),
            sender
        )?;
        if e.kept {
            writeln!(
                self.out,
                "    (a failed notice kept for the operator: read it with `ferrymail queue show {id}`, \
                 remove it with `ferrymail queue delete {id}`)"
            )?;
        }
        for r in &e.recipients {
            let state = r.state.map_or("waiting for pickup", RecipientState::as_str);
            *self.states.entry(state.to_owned()).or_default() += 1;
            let mut detail = String::new();
            if r.attempts > 0 {
                detail.push_str(&format!(", {} attempt(s)", r.attempts));
            }
            if r.link_wait {
                // Due when the route's gate opens, not at a time.
                detail.push_str(", waiting for the link");
            } else if let (Some(next), Some(RecipientState::Deferred | RecipientState::Queued)) =
                (r.next_attempt_at, r.state)
                && next > self.now
            {
                detail.push_str(&format!(", next in {}", age(next - self.now)));
            }
            writeln!(
                self.out,
                "    {:<40} {}{detail}",
                printable(&r.address),
                printable(state)
            )?;
            if let Some(reply) = &r.last_reply {
                writeln!(self.out, "        {}", printable(reply))?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<()> {
        if self.messages == 0 {
            return writeln!(self.out, "Mail queue is empty");
        }
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        writeln!(
            self.out,
            "-- {} message(s), {}, recipients: {}",
            self.messages,
            size(self.bytes),
            states.join(", ")
        )
    }
}

/// `42s`, `5m`, `3h`, `2d`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `512B`, `1.5K`, `2.0M`.
pub fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes}B"),
        1024..1_048_576 => format!("{:.1}K", bytes as f64 / 1024.0),
        _ => format!("{:.1}M", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(age(59), "59s");
        assert_eq!(age(3599), "59m");
        assert_eq!(age(86400 * 3), "3d");
        assert_eq!(age(-5), "0s");
        assert_eq!(size(1023), "1023B");
        assert_eq!(size(1536), "1.5K");
        assert_eq!(size(3 << 20), "3.0M");
    }
}
