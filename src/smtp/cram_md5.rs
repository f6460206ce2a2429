//! CRAM-MD5 (RFC 2195), the mechanism fetchmail's ODMR client uses: the server sends a
//! unique challenge, the client answers with its name and HMAC-MD5 (RFC 2104) of the
//! challenge keyed with the shared secret, so the secret never crosses the wire. The
//! server must hold the secret itself, which is why ODMR accounts keep theirs in a file
//! rather than as a password hash.

use md5::{Digest, Md5};

/// A challenge for one exchange: `<random.time@hostname>` (RFC 2195 §2).
pub fn challenge(hostname: &str) -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the OS random source works");
    format!(
        "<{}.{}@{hostname}>",
        u64::from_le_bytes(random),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    )
}

/// HMAC-MD5 of `message` under `key`, in lower-case hex.
pub fn hmac_md5_hex(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..16].copy_from_slice(&Md5::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Md5::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Md5::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    crate::hex::encode(&outer.finalize())
}

/// The user a decoded response names, if its digest is right for `secret_of(user)`.
pub fn verify(
    challenge: &str,
    response: &str,
    secret_of: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let (user, digest) = response.trim_end().rsplit_once(' ')?;
    let secret = secret_of(user)?;
    let expected = hmac_md5_hex(secret.as_bytes(), challenge.as_bytes());
    same_secret(&expected, digest.to_ascii_lowercase()).then(|| user.to_owned())
}

/// Whether two secrets are equal, in a time that does not depend on where they differ.
pub(crate) fn same_secret(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_of_rfc_2195_and_rfc_2104() {
        // RFC 2195 §2.
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(
            hmac_md5_hex(b"tanstaaftanstaaf", challenge.as_bytes()),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
        // RFC 2104 test vector 2.
        assert_eq!(
            hmac_md5_hex(b"Jefe", b"what do ya want for nothing?"),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        let secret = |u: &str| (u == "tim").then(|| "tanstaaftanstaaf".to_owned());
        assert_eq!(
            verify(challenge, "tim b913a602c7eda7a495b4e6e7334d3890", &secret).as_deref(),
            Some("tim")
        );
        assert_eq!(
            verify(challenge, "tim b913a602c7eda7a495b4e6e7334d3891", &secret),
            None
        );
        assert_eq!(
            verify(challenge, "bob b913a602c7eda7a495b4e6e7334d3890", &secret),
            None
        );
        assert!(challenge_is_unique());
    }

    fn challenge_is_unique() -> bool {
        challenge("h") != challenge("h")
    }
}
