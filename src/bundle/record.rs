//! What a chunk holds: records, each a line `m <json> <content>` or `r <json> 0` giving
//! the lengths of what follows, then the JSON and the content. A message record carries
//! the message's whole envelope as the exporting node holds it (sender, recipients with
//! their positions there, NOTIFY and ORCPT, ENVID, RET, body type, SMTPUTF8) and a
//! SHA-256 of its content, which is also what makes its import idempotent. A receipt
//! says what an importer accepted and refused of one bundle.

use serde::{Deserialize, Serialize};

use crate::smtp::{BodyType, Mailbox, Notify, Ret};
use crate::spool::Recipient;

/// A message as a bundle carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Its queue id at the exporting node: with that node's name, what the importer
    /// remembers to take it once.
    pub id: String,
    /// Unix seconds, when the exporting node received it.
    pub received_at: i64,
    /// Empty for the null reverse-path.
    pub sender: String,
    pub recipients: Vec<BundledRecipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyType>,
    #[serde(default)]
    pub smtputf8: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

/// A recipient, with its position in the exporting node's envelope. Its fields are the
/// text another node wrote: an importer checks each recipient alone (`to_recipient`), so
/// one bad address refuses that recipient, not the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledRecipient {
    pub position: usize,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

impl BundledRecipient {
    pub fn new(position: usize, r: &Recipient) -> BundledRecipient {
        BundledRecipient {
            position,
            address: r.address.to_string(),
            notify: r.notify.as_ref().map(Notify::to_string),
            orcpt: r.orcpt.clone(),
        }
    }

    /// The recipient as this node stores it, or why it cannot be: an enhanced status
    /// code (RFC 3463) and a reason.
    pub(crate) fn to_recipient(&self) -> Result<Recipient, (&'static str, String)> {
        let bad = |what: &str, value: &str| ("5.1.3", format!("bad {what} {value:?}"));
        let address =
            Mailbox::parse(&self.address).map_err(|_| bad("recipient address", &self.address))?;
        let notify = match &self.notify {
            Some(n) => Some(Notify::parse(n).ok_or_else(|| bad("NOTIFY", n))?),
            None => None,
        };
        if let Some(orcpt) = self
            .orcpt
            .as_deref()
            .filter(|o| o.chars().any(char::is_control))
        {
            return Err(bad("ORCPT", orcpt));
        }
        Ok(Recipient {
            address,
            notify,
            orcpt: self.orcpt.clone(),
        })
    }
}

/// An importer's answer to one bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The bundle answered.
    pub bundle: String,
    /// Recipients now the importer's to deliver (imported now, or before).
    pub accepted: Vec<Accepted>,
    pub refused: Vec<Refused>,
    /// What could not be read (a damaged chunk, a cut-off end): its messages are in
    /// neither list and go again in a later bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The exporter's queue id.
    pub id: String,
    pub positions: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub id: String,
    pub position: usize,
    /// RFC 3463 enhanced status, e.g. `5.1.3`.
    pub status: String,
    /// Why, as an SMTP reply would say it.
    pub reason: String,
}

/// A record read back from a chunk.
#[derive(Debug)]
pub enum Record<'a> {
    Message(Box<MessageRecord>, &'a [u8]),
    Receipt(Receipt),
}

/// SHA-256 of `content`, hex.
pub fn sha256(content: &[u8]) -> String {
    crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, content).as_ref())
}

pub fn encode_message(record: &MessageRecord, content: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(record).expect("records serialise");
    frame('m', &json, content)
}

pub fn encode_receipt(receipt: &Receipt) -> Vec<u8> {
    let json = serde_json::to_vec(receipt).expect("receipts serialise");
    frame('r', &json, &[])
}

fn frame(kind: char, json: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + content.len() + 32);
    out.extend_from_slice(format!("{kind} {} {}\n", json.len(), content.len()).as_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(content);
    out
}

/// The records of a decompressed chunk, in order; a record that cannot be read ends the
/// chunk with an error (the chunk was authentic, so only a writer's bug does that).
pub fn decode(raw: &[u8]) -> Records<'_> {
    Records { raw, at: 0 }
}

pub struct Records<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.raw.len() {
            return None;
        }
        let result = self.read();
        if result.is_err() {
            self.at = self.raw.len();
        }
        Some(result)
    }
}

impl<'a> Records<'a> {
    fn read(&mut self) -> Result<Record<'a>, String> {
        let rest = &self.raw[self.at..];
        let end = rest
            .iter()
            .take(64)
            .position(|&b| b == b'\n')
            .ok_or("a record line is unreadable")?;
        let line = std::str::from_utf8(&rest[..end]).map_err(|_| "a record line is not text")?;
        let fields: Vec<&str> = line.split(' ').collect();
        let [kind, json_len, content_len] = fields.as_slice() else {
            return Err(format!("record line {line:?} is unreadable"));
        };
        let (Ok(json_len), Ok(content_len)) =
            (json_len.parse::<usize>(), content_len.parse::<usize>())
        else {
            return Err(format!("record line {line:?} is unreadable"));
        };
        let start = end + 1;
        let json_end = start.checked_add(json_len).filter(|&e| e <= rest.len());
        let content_end = json_end
            .and_then(|j| j.checked_add(content_len))
            .filter(|&e| e <= rest.len());
        let (Some(json_end), Some(content_end)) = (json_end, content_end) else {
            return Err("a record runs past its chunk".into());
        };
        let json = &rest[start..json_end];
        let content = &rest[json_end..content_end];
        self.at += content_end;
        match *kind {
            "m" => serde_json::from_slice(json)
                .map(|m| Record::Message(Box::new(m), content))
                .map_err(|e| format!("a message record is unreadable: {e}")),
            "r" => serde_json::from_slice(json)
                .map(Record::Receipt)
                .map_err(|e| format!("a receipt is unreadable: {e}")),
            other => Err(format!("unknown record kind {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What another node wrote is checked a recipient at a time: a bad address, NOTIFY
    /// or ORCPT refuses that recipient with 5.1.3, and a good one reads as it was sent.
    #[test]
    fn a_bundled_recipient_is_checked_alone() {
        let bundled = |address: &str, notify: Option<&str>, orcpt: Option<&str>| {
            BundledRecipient {
                position: 0,
                address: address.into(),
                notify: notify.map(Into::into),
                orcpt: orcpt.map(Into::into),
            }
            .to_recipient()
        };
        let good = bundled(
            "b@y.example",
            Some("success,delay"),
            Some("rfc822;b@y.example"),
        )
        .unwrap();
        assert_eq!(good.address.to_string(), "b@y.example");
        assert_eq!(good.notify.unwrap().to_string(), "SUCCESS,DELAY");
        for bad in [
            bundled("not an address", None, None),
            bundled("b@y.example", Some("SOMETIMES"), None),
            bundled(
                "b@y.example",
                None,
                Some("rfc822;b@y.example\r\nRCPT TO:<x>"),
            ),
        ] {
            assert_eq!(bad.unwrap_err().0, "5.1.3");
        }
        let back = BundledRecipient::new(3, &Recipient::parse("c@z.example").unwrap());
        assert_eq!(
            back.to_recipient().unwrap().address.to_string(),
            "c@z.example"
        );
    }
}
