//! A message's content on its way into a draft from a file (a maildrop, a bundle): its
//! line endings made CRLF (a NUL byte refuses it), lines over 998 octets folded
//! (RFC 5322 §2.1.1), then its header edited and the result fed to the signer
//! (`ContentEdits`). Each piece goes through all of them in turn, so memory is bounded by
//! the piece, not the message.

use super::ContentEdits;
use crate::smtp::canon::CrlfCanon;
use crate::smtp::line_length::Folder;

/// The content held a NUL byte: it cannot be stored.
#[derive(Debug)]
pub struct NulByte;

pub struct Incoming {
    edits: ContentEdits,
    canon: CrlfCanon,
    folder: Folder,
    crlf: Vec<u8>,
    folded: Vec<u8>,
    edited: Vec<u8>,
}

impl Incoming {
    pub fn new(edits: ContentEdits) -> Incoming {
        Incoming {
            edits,
            canon: CrlfCanon::new(),
            folder: Folder::default(),
            crlf: Vec::with_capacity(70 << 10),
            folded: Vec::with_capacity(70 << 10),
            edited: Vec::with_capacity(70 << 10),
        }
    }

    /// Bytes written ahead of the content (our `Received:`): signed as they are.
    pub fn written(&mut self, bytes: &[u8]) {
        self.edits.written(bytes);
    }

    /// The next piece of content; returns what to write into the draft.
    pub fn push(&mut self, piece: &[u8]) -> Result<&[u8], NulByte> {
        self.crlf.clear();
        self.canon
            .push(piece, &mut self.crlf)
            .map_err(|_| NulByte)?;
        Ok(self.pass())
    }

    /// The end of the content; returns what is left to write.
    pub fn finish(&mut self) -> &[u8] {
        self.crlf.clear();
        std::mem::replace(&mut self.canon, CrlfCanon::new()).finish(&mut self.crlf);
        self.folded.clear();
        self.folder.push(&self.crlf, &mut self.folded);
        self.edited.clear();
        self.edits.header.push(&self.folded, &mut self.edited);
        self.edits.header.finish(&mut self.edited);
        self.edits.written(&self.edited);
        &self.edited
    }

    fn pass(&mut self) -> &[u8] {
        self.folded.clear();
        self.folder.push(&self.crlf, &mut self.folded);
        self.edited.clear();
        self.edits.header.push(&self.folded, &mut self.edited);
        self.edits.written(&self.edited);
        &self.edited
    }

    /// Some line was folded.
    pub fn folded(&self) -> bool {
        self.folder.folded()
    }

    /// The fields to store before the message (its DKIM signatures).
    pub fn prepend(&mut self, id: &str) -> Vec<u8> {
        self.edits.prepend(id)
    }
}
