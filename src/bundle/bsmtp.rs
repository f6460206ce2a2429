//! Batched SMTP (BSMTP): SMTP commands and message texts in one stream, with no
//! replies, as Exim writes it with `use_bsmtp` and reads it with `-bS`, and as UUCP
//! sites fed `rsmtp`. A transaction is `MAIL FROM:<s>`, one `RCPT TO:<r>` per
//! recipient, `DATA`, the message dot-stuffed (RFC 5321 §4.5.2) and a line with a single
//! dot. Lines end in LF as Exim writes them; the reader takes LF or CRLF. Exim's reader
//! refuses ESMTP parameters, so the writer sends none; the reader takes NOTIFY, ORCPT,
//! RET, ENVID and BODY from a writer that sends them.

use std::io::{self, BufRead, Read, Write};

#[cfg(test)]
use crate::smtp::Notify;
use crate::smtp::command::{self, Command};
use crate::smtp::{BodyType, Mailbox, Ret, ReversePath};
use crate::spool::Recipient;

/// Writes BSMTP transactions.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Writer<W> {
        Writer { out, written: 0 }
    }

    /// One transaction; `content` is the message with CRLF lines.
    pub fn add(
        &mut self,
        sender: &ReversePath,
        recipients: &[&Mailbox],
        content: &[u8],
    ) -> io::Result<()> {
        let mut text = Vec::with_capacity(content.len() + 256);
        text.extend_from_slice(format!("MAIL FROM:<{sender}>\n").as_bytes());
        for r in recipients {
            text.extend_from_slice(format!("RCPT TO:<{r}>\n").as_bytes());
        }
        text.extend_from_slice(b"DATA\n");
        for line in content.split_inclusive(|&b| b == b'\n') {
            let line = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(line);
            if line.first() == Some(&b'.') {
                text.push(b'.');
            }
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        text.extend_from_slice(b".\n");
        self.out.write_all(&text)?;
        self.written += text.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A transaction read from a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    pub sender: ReversePath,
    pub recipients: Vec<Recipient>,
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    pub body: Option<BodyType>,
    pub smtputf8: bool,
    /// The message, with CRLF lines, dot-stuffing undone.
    pub content: Vec<u8>,
    /// The line its `MAIL` command was on (1-based), for errors.
    pub line: usize,
}

/// What reading a batch found wrong: the line, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub line: usize,
    pub message: String,
}

/// Reads a batch; each transaction is handed to `each` as soon as it is complete.
/// Commands are parsed as SMTP ones are (`smtp::command`). A command out of place or
/// unreadable is a fault: the transaction it is in is dropped, and reading goes on at
/// the next `MAIL` (Exim abandons the rest of the batch instead; one bad transaction
/// should not cost the others). `max_size` bounds a message.
pub fn read(
    input: &mut dyn BufRead,
    max_size: u64,
    each: &mut dyn FnMut(Transaction) -> io::Result<()>,
) -> io::Result<Vec<Fault>> {
    let mut faults = Vec::new();
    let mut current: Option<Transaction> = None;
    let mut line_no = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut *input).take(MAX_LINE).read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        let text = trim_eol(&line);
        if text.is_empty() {
            continue;
        }
        let mut fault = |message: String| {
            faults.push(Fault {
                line: line_no,
                message,
            })
        };
        match command::parse(text) {
            Ok(Command::Mail(m)) => {
                if current.is_some() {
                    fault("MAIL inside a transaction: the one before is dropped".into());
                }
                current = Some(Transaction {
                    sender: m.path,
                    envid: m.envid,
                    ret: m.ret,
                    body: m.body,
                    smtputf8: m.smtputf8,
                    line: line_no,
                    ..Transaction::default()
                });
            }
            Ok(Command::Rcpt(r)) => match &mut current {
                Some(t) => t.recipients.push(Recipient {
                    address: r.mailbox,
                    notify: r.notify,
                    orcpt: r.orcpt,
                }),
                None => fault("RCPT without MAIL".into()),
            },
            Ok(Command::Data) => {
                let Some(mut t) = current.take() else {
                    fault("DATA without MAIL".into());
                    let _skipped = read_data(input, &mut line_no, &mut Vec::new(), 0)?;
                    continue;
                };
                match read_data(input, &mut line_no, &mut t.content, max_size)? {
                    Ok(()) if t.recipients.is_empty() => faults.push(Fault {
                        line: t.line,
                        message: "a transaction without recipients".into(),
                    }),
                    Ok(()) => each(t)?,
                    Err(message) => faults.push(Fault {
                        line: t.line,
                        message,
                    }),
                }
            }
            Ok(Command::Rset) => current = None,
            Ok(Command::Helo(_) | Command::Ehlo(_) | Command::Noop | Command::Quit) => {}
            Ok(other) => {
                fault(format!("{other:?} has no place in a batch"));
                current = None;
            }
            Err(e) => {
                let shown: String = String::from_utf8_lossy(text).chars().take(60).collect();
                fault(format!("{shown:?}: {e}"));
                current = None;
            }
        }
    }
    if let Some(t) = current {
        faults.push(Fault {
            line: t.line,
            message: "the batch ends inside a transaction".into(),
        });
    }
    Ok(faults)
}

/// Longest line read (a message line may be longer than SMTP allows; it is folded at
/// commit like any other).
const MAX_LINE: u64 = 1 << 20;

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads a message up to its lone dot into `content` (CRLF lines, unstuffed).
fn read_data(
    input: &mut dyn BufRead,
    line_no: &mut usize,
    content: &mut Vec<u8>,
    max_size: u64,
) -> io::Result<Result<(), String>> {
    let mut line = Vec::new();
    let mut too_big = false;
    loop {
        line.clear();
        if (&mut *input).take(MAX_LINE).read_until(b'\n', &mut line)? == 0 {
            return Ok(Err("the batch ends inside a message".into()));
        }
        *line_no += 1;
        let text = trim_eol(&line);
        if text == b"." {
            return Ok(if too_big {
                Err(format!("a message larger than {max_size} bytes"))
            } else {
                Ok(())
            });
        }
        let text = text.strip_prefix(b".").unwrap_or(text);
        if content.len() as u64 + text.len() as u64 + 2 > max_size {
            too_big = true;
            content.clear();
            continue;
        }
        if !too_big {
            content.extend_from_slice(text);
            content.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests;
