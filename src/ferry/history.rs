//! XZSTD's references (docs/xferry.md): a small message compresses far better against
//! the mail that went before it (the same headers, the same words, the quoted reply)
//! than alone. So a message may name up to `MAX_REFS` earlier messages of the same
//! connection, by the queue ids the receiver gave them, and is compressed with their
//! contents, in the order named, as its dictionary.
//!
//! Both ends keep the contents of committed messages of at most `ITEM_MAX` bytes: the
//! receiver the last `KEPT` it committed (`Committed`), the sender those it saw
//! committed (`Answered`). The sender names only messages fewer than `REACH` of its own
//! transactions back. Since then the receiver has committed at most that many, plus
//! earlier ones whose commits finished later (commits run at once and finish in any
//! order; the listener lets at most 32 wait): `KEPT` is twice `REACH`, so it still
//! holds every one it is asked for. Were one missing, the message is refused with 451
//! and sent again, never decoded wrong.

use std::collections::VecDeque;
use std::sync::Arc;

/// References a message may name.
pub const MAX_REFS: usize = 4;
/// Content longer than this is never a reference (a typical letter is a few KiB).
pub const ITEM_MAX: usize = 16 << 10;
/// How far back, in transactions, a sender may refer.
pub const REACH: u64 = 64;
/// Committed contents the receiver keeps per connection: at most 2 MiB.
pub const KEPT: usize = 2 * REACH as usize;

/// The dictionary for `contents`, in order.
pub(crate) fn dictionary<'a>(contents: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    contents.into_iter().flatten().copied().collect()
}

/// The receiver's side: the last `KEPT` small messages committed on this connection.
#[derive(Default)]
pub struct Committed {
    items: VecDeque<(String, Arc<Vec<u8>>)>,
}

impl Committed {
    pub fn push(&mut self, id: String, content: Vec<u8>) {
        if content.len() > ITEM_MAX {
            return;
        }
        if self.items.len() == KEPT {
            self.items.pop_front();
        }
        self.items.push_back((id, Arc::new(content)));
    }

    /// The contents of `ids`, in order; `None` if one is not kept.
    pub fn get(&self, ids: &[String]) -> Option<Vec<Arc<Vec<u8>>>> {
        ids.iter()
            .map(|id| {
                self.items
                    .iter()
                    .rev()
                    .find(|(kept, _)| kept == id)
                    .map(|(_, c)| c.clone())
            })
            .collect()
    }
}

/// The sender's side: small messages it saw committed, with the number of the
/// transaction (on this connection) that carried each.
#[derive(Default)]
pub struct Answered {
    items: VecDeque<(u64, String, Arc<Vec<u8>>)>,
}

impl Answered {
    /// Transaction `n` carried `content`, committed as `id`.
    pub fn push(&mut self, n: u64, id: String, content: &[u8]) {
        if content.len() > ITEM_MAX {
            return;
        }
        self.items.push_back((n, id, Arc::new(content.to_vec())));
        if self.items.len() > MAX_REFS {
            self.items.pop_front();
        }
    }

    /// What transaction `n` may name: the latest answered, fewer than `REACH`
    /// transactions back, oldest first.
    pub(crate) fn refs(&self, n: u64) -> Vec<(String, Arc<Vec<u8>>)> {
        self.items
            .iter()
            .filter(|(at, _, _)| n.saturating_sub(*at) < REACH)
            .map(|(_, id, c)| (id.clone(), c.clone()))
            .collect()
    }
}

/// The queue id in our own end-of-data reply, "… queued as ID".
pub(crate) fn queued_as(reply_text: &str) -> Option<&str> {
    let (_, id) = reply_text.rsplit_once("queued as ")?;
    let id = id.trim();
    (!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_names_only_what_the_receiver_still_keeps() {
        let mut sender = Answered::default();
        let mut receiver = Committed::default();
        for n in 0..10u64 {
            let content = format!("message {n}").into_bytes();
            sender.push(n, format!("ID{n}"), &content);
            receiver.push(format!("ID{n}"), content);
        }
        let refs = sender.refs(11);
        let ids: Vec<String> = refs.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, ["ID6", "ID7", "ID8", "ID9"]);
        let kept = receiver.get(&ids).unwrap();
        assert_eq!(kept[3].as_slice(), b"message 9");
        assert!(sender.refs(9 + KEPT as u64).is_empty(), "too far back");
        for n in 10..10 + KEPT as u64 {
            receiver.push(format!("ID{n}"), b"x".to_vec());
        }
        assert!(
            receiver.get(&ids).is_none(),
            "evicted: refused, never guessed"
        );
        sender.push(99, "BIG".into(), &vec![0u8; ITEM_MAX + 1]);
        assert!(!sender.refs(100).iter().any(|(id, _)| id == "BIG"));
        assert_eq!(
            queued_as("2.0.0 Ok: queued as 1K1M52SYE98K3FZX"),
            Some("1K1M52SYE98K3FZX")
        );
        assert_eq!(queued_as("2.0.0 Ok"), None);
    }
}
