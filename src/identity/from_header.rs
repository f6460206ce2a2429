//! The `From:` header of a message whose sender is rewritten (`rewrite.from_header`):
//! the header section is held back as the content streams by (CRLF lines, as stored),
//! edited whole when its empty line arrives, and the rest passes through untouched. The
//! address in `From:` is replaced where a key of the route's rewriting takes it; the
//! display name and the rest of the field stay as written. The original address goes
//! into `Sender:` or the original field into `Reply-To:` when asked, unless the message
//! has one already. A header section over `MAX_HELD` bytes is passed on unedited.

use super::local::LocalNames;
use super::rewrite::SenderRewrite;
use crate::config::KeepOriginal;
use crate::smtp::fields;

/// The most of a header section held back for editing.
pub const MAX_HELD: usize = 1 << 20;

/// What to do to the `From:` field.
#[derive(Clone, Debug)]
pub struct FromEdit {
    pub rewrite: SenderRewrite,
    pub local: LocalNames,
}

/// The streaming stage: `push` content, take what comes out.
#[derive(Debug)]
pub struct HeaderEditor {
    edit: Option<FromEdit>,
    held: Vec<u8>,
    /// The header section has gone by (edited or not).
    passed: bool,
    edited: bool,
}

impl HeaderEditor {
    /// A stage that edits with `edit`, or passes everything through when `None`.
    pub fn new(edit: Option<FromEdit>) -> HeaderEditor {
        let passed = edit.is_none();
        HeaderEditor {
            edit,
            held: Vec::new(),
            passed,
            edited: false,
        }
    }

    #[cfg(test)]
    /// Whether `From:` was rewritten.
    pub(crate) fn edited(&self) -> bool {
        self.edited
    }

    /// Feeds `bytes`; appends to `out` what may go on.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.passed {
            out.extend_from_slice(bytes);
            return;
        }
        let from = self.held.len().saturating_sub(3);
        self.held.extend_from_slice(bytes);
        let end = if self.held.starts_with(b"\r\n") {
            Some(0)
        } else {
            fields::find(&self.held[from..], b"\r\n\r\n").map(|i| from + i + 2)
        };
        if self.held.len() > MAX_HELD {
            self.passed = true;
            out.append(&mut self.held);
        } else if let Some(end) = end {
            self.release(end, out);
        }
    }

    /// The content ended: whatever is held was all header.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.passed {
            let end = self.held.len();
            self.release(end, out);
        }
    }

    /// Edits the header section `held[..end]` and lets everything go.
    fn release(&mut self, end: usize, out: &mut Vec<u8>) {
        self.passed = true;
        let held = std::mem::take(&mut self.held);
        match self
            .edit
            .as_ref()
            .and_then(|e| edit_section(&held[..end], e))
        {
            Some(section) => {
                self.edited = true;
                out.extend_from_slice(&section);
            }
            None => out.extend_from_slice(&held[..end]),
        }
        out.extend_from_slice(&held[end..]);
    }
}

/// The header section with `From:` rewritten, or `None` when there is nothing to do.
fn edit_section(section: &[u8], edit: &FromEdit) -> Option<Vec<u8>> {
    let fields = fields::split(section);
    let is = fields::is;
    let at = fields.iter().position(|f| is(f, "from"))?;
    let field = std::str::from_utf8(fields[at]).ok()?;
    let value = &field[field.find(':')? + 1..];
    let list = mailparse::addrparse(&value.replace("\r\n", "")).ok()?;
    let [mailparse::MailAddr::Single(info)] = list.as_slice() else {
        return None; // several authors, or a group: left as written
    };
    let original = info.addr.clone();
    let to = edit
        .rewrite
        .address_for(&original, &edit.local)?
        .to_string();
    if to.eq_ignore_ascii_case(&original) {
        return None;
    }
    let start = field.rfind(&original)?;
    let new_field = format!(
        "{}{to}{}",
        &field[..start],
        &field[start + original.len()..]
    );
    let mut out = Vec::with_capacity(section.len() + 64);
    for (i, f) in fields.iter().enumerate() {
        if i == at {
            out.extend_from_slice(new_field.as_bytes());
        } else {
            out.extend_from_slice(f);
        }
    }
    match edit.rewrite.keep_original {
        KeepOriginal::Sender if !fields.iter().any(|f| is(f, "sender")) => {
            out.extend_from_slice(format!("Sender: {original}\r\n").as_bytes());
        }
        KeepOriginal::ReplyTo if !fields.iter().any(|f| is(f, "reply-to")) => {
            out.extend_from_slice(format!("Reply-To:{value}").as_bytes());
        }
        _ => {}
    }
    out.extend_from_slice(&section[fields.iter().map(|f| f.len()).sum::<usize>()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rewrite;

    fn editor(keep: KeepOriginal) -> HeaderEditor {
        let rewrite = SenderRewrite::new(&Rewrite {
            senders: [("*".to_owned(), "me@example.org".to_owned())].into(),
            from_header: true,
            keep_original: keep,
            relayed: false,
        });
        HeaderEditor::new(Some(FromEdit {
            rewrite,
            local: LocalNames::new("laptop", &[]),
        }))
    }

    fn run(mut e: HeaderEditor, input: &[u8], piece: usize) -> String {
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            e.push(chunk, &mut out);
        }
        e.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn from_is_rewritten_in_any_piece_size_and_the_body_is_untouched() {
        let input = b"Subject: s\r\nFrom: \"Cron\r\n Daemon\" <root@laptop>\r\nTo: x@y.example\r\n\r\nFrom: root@laptop\r\n";
        for piece in [1, 2, 3, 7, 1000] {
            let out = run(editor(KeepOriginal::None), input, piece);
            assert_eq!(
                out,
                "Subject: s\r\nFrom: \"Cron\r\n Daemon\" <me@example.org>\r\nTo: x@y.example\r\n\r\nFrom: root@laptop\r\n",
                "piece {piece}"
            );
        }
    }

    #[test]
    fn the_original_is_kept_where_asked() {
        let input = b"From: Root <root@laptop>\r\n\r\nbody\r\n";
        let out = run(editor(KeepOriginal::ReplyTo), input, 5);
        assert_eq!(
            out,
            "From: Root <me@example.org>\r\nReply-To: Root <root@laptop>\r\n\r\nbody\r\n"
        );
        let out = run(editor(KeepOriginal::Sender), input, 5);
        assert_eq!(
            out,
            "From: Root <me@example.org>\r\nSender: root@laptop\r\n\r\nbody\r\n"
        );
        let has = b"From: root@laptop\r\nReply-To: other@example.net\r\n\r\n";
        let out = run(editor(KeepOriginal::ReplyTo), has, 4);
        assert_eq!(
            out,
            "From: me@example.org\r\nReply-To: other@example.net\r\n\r\n"
        );
    }

    #[test]
    fn other_senders_and_odd_sections_pass_as_they_are() {
        for input in [
            &b"From: someone@elsewhere.example\r\n\r\nx"[..],
            b"From: a@laptop, b@laptop\r\n\r\nx",
            b"Subject: no from\r\n\r\nx",
            b"From: root@laptop\r\n", // all header, no body
            b"\r\nbody only",
        ] {
            let out = run(editor(KeepOriginal::None), input, 3);
            let same = out.as_bytes() == input;
            assert!(same || input == b"From: root@laptop\r\n", "{out:?}");
        }
        assert_eq!(
            run(editor(KeepOriginal::None), b"From: root@laptop\r\n", 3),
            "From: me@example.org\r\n"
        );
        let big = [
            b"X: ".as_slice(),
            &vec![b'a'; MAX_HELD + 10],
            b"\r\nFrom: root@laptop\r\n\r\n",
        ]
        .concat();
        let out = run(editor(KeepOriginal::None), &big, 4096);
        assert!(
            out.as_bytes() == big.as_slice(),
            "a huge header section passes unedited"
        );
        assert!(!HeaderEditor::new(None).edited());
    }
}
