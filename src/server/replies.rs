//! Replies waiting to be sent, in order. A message's reply waits for its commit, which
//! runs on its own task, so a client that pipelines transactions (BDAT, RFC 3030) has
//! several commits in flight at once and they share the spool's group commit, while
//! every reply still leaves in the order of the commands, and a 250 only once its message
//! is durable (spool/README.md, "The commit protocol"). At most `MAX_COMMITS` wait at a time.

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use crate::smtp::reply::{self, Reply};

/// Commits a session may have in flight before it stops reading to wait for them.
pub const MAX_COMMITS: usize = 32;

enum Part {
    Bytes(Vec<u8>),
    /// The reply a commit will give.
    Commit(JoinHandle<Reply>),
}

#[derive(Default)]
pub struct Replies {
    parts: VecDeque<Part>,
    commits: usize,
}

impl Replies {
    pub fn push(&mut self, r: &Reply) {
        match self.parts.back_mut() {
            Some(Part::Bytes(bytes)) => r.write_to(bytes),
            _ => {
                let mut bytes = Vec::with_capacity(256);
                r.write_to(&mut bytes);
                self.parts.push_back(Part::Bytes(bytes));
            }
        }
    }

    /// A reply that comes when `commit` finishes; whatever follows waits for it.
    pub(crate) fn push_commit(&mut self, commit: JoinHandle<Reply>) {
        self.commits += 1;
        self.parts.push_back(Part::Commit(commit));
    }

    /// Commits waiting: at `MAX_COMMITS`, the session should flush before reading on.
    pub fn commits(&self) -> usize {
        self.commits
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Everything queued, as bytes, once the commits among it have finished.
    pub async fn take(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(part) = self.parts.pop_front() {
            match part {
                Part::Bytes(bytes) => out.extend_from_slice(&bytes),
                Part::Commit(commit) => {
                    self.commits -= 1;
                    // A panicked commit acknowledged nothing.
                    let r = commit.await.unwrap_or(reply::LOCAL_ERROR);
                    r.write_to(&mut out);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_keep_their_order_behind_a_slow_commit() {
        let mut q = Replies::default();
        q.push(&reply::SENDER_OK);
        let slow = tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            reply::OK.with_text("Ok: queued as A")
        });
        q.push_commit(slow);
        q.push_commit(tokio::spawn(async {
            reply::OK.with_text("Ok: queued as B")
        }));
        q.push(&reply::SENDER_OK);
        assert_eq!(q.commits(), 2);
        let text = String::from_utf8(q.take().await).unwrap();
        assert_eq!(
            text,
            "250 2.1.0 Sender ok\r\n250 2.0.0 Ok: queued as A\r\n250 2.0.0 Ok: queued as B\r\n250 2.1.0 Sender ok\r\n"
        );
        assert!(q.is_empty() && q.commits() == 0);
    }
}
