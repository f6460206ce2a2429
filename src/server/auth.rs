//! SMTP AUTH (RFC 4954) credentials and SASL decoding. `accept.users` holds
//! `name:argon2-PHC-hash` lines (from `ferrymail hash-password`). Verification costs the
//! same for an unknown user as for a wrong password (a dummy hash is checked), runs on a
//! blocking thread, and at most `MAX_CONCURRENT_CHECKS` run at once: each argon2 check
//! takes 19 MiB. Failures are throttled per connection and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// argon2 checks running at once (19 MiB each with the default parameters).
pub const MAX_CONCURRENT_CHECKS: usize = 2;
/// Failed AUTH attempts in one connection before it is closed.
pub const MAX_FAILURES_PER_CONNECTION: u32 = 3;
/// Failed AUTH attempts from one address within `FAILURE_WINDOW` before AUTH is refused.
pub const MAX_FAILURES_PER_CLIENT: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);

pub struct Users {
    hashes: HashMap<String, String>,
    /// Checked for unknown users, so they cost what a wrong password costs.
    dummy: String,
}

impl Users {
    /// Reads the users file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut hashes = HashMap::new();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: &str| format!("{}:{}: {m}", path.display(), no + 1);
            let (name, hash) = line
                .split_once(':')
                .ok_or_else(|| at("expected name:hash"))?;
            if name.is_empty() || name.chars().any(|c| c.is_control() || c == ' ') {
                return Err(at("bad user name"));
            }
            PasswordHash::new(hash).map_err(|e| {
                at(&format!(
                    "not an argon2 hash ({e}); make one with `ferrymail hash-password`"
                ))
            })?;
            hashes.insert(name.to_owned(), hash.to_owned());
        }
        Ok(Users {
            hashes,
            dummy: hash_password("not a real password").map_err(|e| e.to_string())?,
        })
    }

    /// Blocking: one argon2 check whether or not the user exists.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.hashes.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let ok = PasswordHash::new(hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        ok && known
    }
}

/// An argon2id PHC string with a random salt and the default costs.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes())?
        .to_string())
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("not base64")]
    Base64,
    #[error("malformed response")]
    Malformed,
}

/// Decodes a base64 SASL response into text without control characters.
pub fn decode(b64: &str) -> Result<String, SaslError> {
    let bytes = STANDARD.decode(b64.trim()).map_err(|_| SaslError::Base64)?;
    String::from_utf8(bytes).map_err(|_| SaslError::Malformed)
}

/// RFC 4616 PLAIN: `authzid NUL authcid NUL passwd`; authzid empty or the same user.
pub(crate) fn decode_plain(b64: &str) -> Result<(String, String), SaslError> {
    let bytes = STANDARD.decode(b64.trim()).map_err(|_| SaslError::Base64)?;
    let mut parts = bytes.split(|b| *b == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let (authz, user, pass) = (text(authz)?, text(user)?, text(pass)?);
    if user.is_empty() || (!authz.is_empty() && authz != user) {
        return Err(SaslError::Malformed);
    }
    Ok((user, pass))
}

/// Failed attempts per client address within a sliding window.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    pub(crate) fn blocked(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().expect("not poisoned");
        map.get(&ip).is_some_and(|(n, since)| {
            *n >= MAX_FAILURES_PER_CLIENT && since.elapsed() < FAILURE_WINDOW
        })
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().expect("not poisoned");
        map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decoding() {
        let enc = |s: &[u8]| STANDARD.encode(s);
        assert_eq!(
            decode_plain(&enc(b"\0alice\0secret")),
            Ok(("alice".into(), "secret".into()))
        );
        assert_eq!(
            decode_plain(&enc(b"alice\0alice\0secret")),
            Ok(("alice".into(), "secret".into()))
        );
        assert_eq!(
            decode_plain(&enc(b"mallory\0alice\0secret")),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(&enc(b"alice\0secret")),
            Err(SaslError::Malformed)
        );
        assert_eq!(decode_plain("***"), Err(SaslError::Base64));
    }

    #[test]
    fn users_file_and_verification() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        let hash = hash_password("correct horse").unwrap();
        std::fs::write(&file, format!("# comment\n\nalice:{hash}\n")).unwrap();
        let users = Users::load(&file).unwrap();
        assert!(users.verify("alice", "correct horse"));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("bob", "correct horse"));
        std::fs::write(&file, "alice:plaintext\n").unwrap();
        let err = Users::load(&file).err().unwrap();
        assert!(err.contains("users:1: not an argon2 hash"), "{err}");
    }

    #[test]
    fn throttle() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_CLIENT {
            assert!(!t.blocked(ip));
            t.failed(ip);
        }
        assert!(t.blocked(ip));
        assert!(!t.blocked("192.0.2.2".parse().unwrap()));
    }
}
