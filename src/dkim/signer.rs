//! Signing a message as it is committed (RFC 6376 §5): the signer sees the content
//! exactly as it is written to the spool, keeps the header section (at most
//! `MAX_HEADER`), hashes the body in relaxed form as it streams by, and at the end makes
//! one `DKIM-Signature:` field per key whose domain is the `From:` domain or a parent of
//! it. The fields are stored with the message (spool/README.md, "prepended fields"), so
//! every retry sends the same bytes. Only mail this host answers for is signed: from
//! local programs, authenticated clients and `relay_networks`; never mail merely passing
//! through.

use std::sync::Arc;

use base64::Engine;

use super::canon::{RelaxedBody, relaxed_header};
use super::key::SigningKey;
use crate::config::{Config, IpNet};
use crate::smtp::fields;
use crate::spool::{Origin, OriginKind};

/// The most of a header section kept for signing; a larger one is not signed.
pub const MAX_HEADER: usize = 1 << 20;

/// Header fields signed when present, unless `[[dkim]] headers` says otherwise: those a
/// reader sees and trusts (RFC 6376 §5.4.1).
pub const DEFAULT_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
];

/// One `[[dkim]]` entry, its key loaded.
#[derive(Debug)]
pub struct DkimKey {
    domain: String,
    selector: String,
    key: SigningKey,
    headers: Vec<String>,
}

/// Every key, and whose mail is ours to sign.
#[derive(Clone, Debug, Default)]
pub struct Signing {
    keys: Vec<Arc<DkimKey>>,
    relay_networks: Vec<IpNet>,
}

impl Signing {
    /// Loads every `[[dkim]]` key; the error names the entry and its file.
    pub fn load(config: &Config) -> Result<Signing, String> {
        let mut keys = Vec::new();
        for (i, d) in config.dkim.iter().enumerate() {
            let key = SigningKey::load(&d.key, d.algorithm)
                .map_err(|e| format!("dkim[{i}].key {}: {e}", d.key.display()))?;
            let mut headers: Vec<String> = match &d.headers {
                Some(list) => list.iter().map(|h| h.to_ascii_lowercase()).collect(),
                None => DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            };
            if !headers.iter().any(|h| h == "from") {
                headers.insert(0, "from".into());
            }
            keys.push(Arc::new(DkimKey {
                domain: d.domain.trim_end_matches('.').to_ascii_lowercase(),
                selector: d.selector.clone(),
                key,
                headers,
            }));
        }
        Ok(Signing {
            keys,
            relay_networks: config.accept.relay_networks.clone(),
        })
    }

    /// A signer for a message of `origin`, when there are keys and its mail is ours.
    pub(crate) fn signer_for(&self, origin: &Origin) -> Option<Signer> {
        let ours = origin.kind == OriginKind::Local
            || origin.auth.is_some()
            || origin.kind == OriginKind::Smtp
                && origin
                    .client
                    .as_deref()
                    .and_then(|c| c.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| self.relay_networks.iter().any(|n| n.contains(ip)));
        (ours && !self.keys.is_empty()).then(|| Signer {
            keys: self.keys.clone(),
            head: Vec::new(),
            in_body: false,
            too_big: false,
            body: RelaxedBody::default(),
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            scratch: Vec::new(),
        })
    }
}

/// One message's signing, fed its content as it is written.
pub struct Signer {
    keys: Vec<Arc<DkimKey>>,
    head: Vec<u8>,
    in_body: bool,
    too_big: bool,
    body: RelaxedBody,
    hash: ring::digest::Context,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// Feeds content bytes, in order, exactly as stored.
    pub fn update(&mut self, bytes: &[u8]) {
        if self.too_big {
            return;
        }
        if self.in_body {
            self.body_bytes(bytes);
            return;
        }
        let from = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(bytes);
        let end = if self.head.starts_with(b"\r\n") {
            Some(0)
        } else {
            fields::find(&self.head[from..], b"\r\n\r\n").map(|i| from + i + 2)
        };
        match end {
            Some(end) => {
                self.in_body = true;
                let rest = self.head.split_off(end + 2);
                self.head.truncate(end);
                self.body_bytes(&rest);
            }
            None if self.head.len() > MAX_HEADER => {
                self.too_big = true;
                self.head = Vec::new();
            }
            None => {}
        }
    }

    fn body_bytes(&mut self, bytes: &[u8]) {
        self.scratch.clear();
        self.body.push(bytes, &mut self.scratch);
        self.hash.update(&self.scratch);
    }

    /// The `DKIM-Signature:` fields to put before the message (each ending in CRLF);
    /// empty when no key is for its `From:` domain. `now` is the signing time `t=`.
    pub fn finish(mut self, now: i64) -> Result<Vec<u8>, String> {
        if self.too_big {
            return Err(format!(
                "header section over {MAX_HEADER} bytes: not signed"
            ));
        }
        let mut tail = Vec::new();
        std::mem::take(&mut self.body).finish(&mut tail);
        self.hash.update(&tail);
        let section = self.head;
        let fields = fields::split(&section);
        let Some(domain) = from_domain(&fields) else {
            return Ok(Vec::new());
        };
        let bh = base64(self.hash.finish().as_ref());
        let mut out = Vec::new();
        for key in self.keys.iter().filter(|k| covers(&k.domain, &domain)) {
            out.extend(sign_one(key, &fields, &bh, now)?);
        }
        Ok(out)
    }
}

/// The domain of the message's one `From:` address, lower case; `None` when there is
/// no `From:`, several, or one with several authors (nothing to align a signature with).
fn from_domain(fields: &[&[u8]]) -> Option<String> {
    let mut from = fields.iter().filter(|f| fields::is(f, "from"));
    let (Some(field), None) = (from.next(), from.next()) else {
        return None;
    };
    let value = String::from_utf8_lossy(fields::value(field)).replace("\r\n", "");
    let list = mailparse::addrparse(&value).ok()?;
    let [mailparse::MailAddr::Single(info)] = list.as_slice() else {
        return None;
    };
    let (_, domain) = info.addr.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// `d=` may be the author's domain or a parent of it.
fn covers(key_domain: &str, from_domain: &str) -> bool {
    from_domain == key_domain
        || from_domain
            .strip_suffix(key_domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn sign_one(key: &DkimKey, fields: &[&[u8]], bh: &str, now: i64) -> Result<Vec<u8>, String> {
    // h=: each listed name as often as it is present; From once more (oversigned).
    let mut names: Vec<&str> = Vec::new();
    for name in &key.headers {
        let present = fields.iter().filter(|f| fields::is(f, name)).count();
        let times = if name == "from" { present + 1 } else { present };
        names.extend(std::iter::repeat_n(name.as_str(), times));
    }
    let unsigned = format!(
        "DKIM-Signature: v=1; a={}; c=relaxed/relaxed; d={}; s={};\r\n\tt={now}; h={};\r\n\tbh={bh};\r\n\tb=",
        key.key.algorithm().tag(),
        key.domain,
        key.selector,
        names.join(":"),
    );
    // RFC 6376 §5.4.2: instances are taken from the bottom of the header section up.
    let mut used = vec![false; fields.len()];
    let mut data = Vec::new();
    for name in &names {
        let found = (0..fields.len())
            .rev()
            .find(|&i| !used[i] && fields::is(fields[i], name));
        if let Some(i) = found {
            used[i] = true;
            data.extend(relaxed_header(fields[i]));
            data.extend_from_slice(b"\r\n");
        }
    }
    data.extend(relaxed_header(unsigned.as_bytes()));
    let signature = key.key.sign(&data)?;
    let mut field = unsigned.into_bytes();
    field.extend_from_slice(base64(&signature).as_bytes());
    field.extend_from_slice(b"\r\n");
    Ok(field)
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_chooses_the_keys() {
        assert!(covers("example.org", "example.org"));
        assert!(covers("example.org", "mail.example.org"));
        assert!(!covers("example.org", "badexample.org"));
        let f = |s: &'static [u8]| fields::split(s);
        assert_eq!(
            from_domain(&f(b"From: A <a@Example.ORG>\r\n\r\n")).as_deref(),
            Some("example.org")
        );
        assert_eq!(
            from_domain(&f(b"From: a@x.example\r\nFrom: b@y.example\r\n\r\n")),
            None
        );
        assert_eq!(
            from_domain(&f(b"From: a@x.example, b@y.example\r\n\r\n")),
            None
        );
        assert_eq!(from_domain(&f(b"Subject: none\r\n\r\n")), None);
    }
}
