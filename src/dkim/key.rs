//! DKIM signing keys: RSA with SHA-256 (RFC 6376 §3.3.1, at least 2048 bits as RFC 8301
//! advises and ring requires) and Ed25519 with SHA-256 (RFC 8463). Keys are PEM files,
//! PKCS#8 (`BEGIN PRIVATE KEY`) or, for RSA, PKCS#1 (`BEGIN RSA PRIVATE KEY`), as
//! `openssl genpkey` and opendkim-genkey write them. Also the public half as the DNS TXT
//! record publishes it (RFC 6376 §3.6.1).

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::DkimAlgorithm;

/// A key that signs.
pub enum SigningKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm().tag())
    }
}

impl SigningKey {
    /// Reads the PEM key at `path`, which must be a key for `algorithm`.
    pub fn load(path: &std::path::Path, algorithm: DkimAlgorithm) -> Result<SigningKey, String> {
        let pem = std::fs::read(path).map_err(|e| e.to_string())?;
        SigningKey::from_pem(&pem, algorithm)
    }

    pub fn from_pem(pem: &[u8], algorithm: DkimAlgorithm) -> Result<SigningKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| "not a PEM private key (PKCS#8, or PKCS#1 for RSA)".to_owned())?;
        let mismatch = || format!("not an {} key", algorithm.tag());
        match (algorithm, der) {
            (DkimAlgorithm::RsaSha256, PrivateKeyDer::Pkcs1(der)) => {
                RsaKeyPair::from_der(der.secret_pkcs1_der())
            }
            (DkimAlgorithm::RsaSha256, PrivateKeyDer::Pkcs8(der)) => {
                RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            }
            (DkimAlgorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(der)) => {
                return Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                    .map(SigningKey::Ed25519)
                    .map_err(|_| mismatch());
            }
            _ => return Err(mismatch()),
        }
        .map(SigningKey::Rsa)
        .map_err(|e| format!("{}: {e} (RSA keys need 2048 to 8192 bits)", mismatch()))
    }

    pub fn algorithm(&self) -> DkimAlgorithm {
        match self {
            SigningKey::Rsa(_) => DkimAlgorithm::RsaSha256,
            SigningKey::Ed25519(_) => DkimAlgorithm::Ed25519Sha256,
        }
    }

    /// The signature over `data` (the canonical header fields): RSASSA-PKCS1-v1_5 with
    /// SHA-256, or Ed25519 over the data's SHA-256 digest (RFC 8463 §3).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            SigningKey::Rsa(key) => {
                let mut signature = vec![0u8; key.public().modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    data,
                    &mut signature,
                )
                .map_err(|_| "RSA signing failed".to_owned())?;
                Ok(signature)
            }
            SigningKey::Ed25519(key) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                Ok(key.sign(digest.as_ref()).as_ref().to_vec())
            }
        }
    }

    /// The DNS TXT record that publishes the public key.
    pub(crate) fn txt_record(&self) -> String {
        let (k, public) = match self {
            SigningKey::Rsa(key) => ("rsa", subject_public_key_info(key.public().as_ref())),
            SigningKey::Ed25519(key) => ("ed25519", key.public_key().as_ref().to_vec()),
        };
        let p = base64::engine::general_purpose::STANDARD.encode(public);
        format!("v=DKIM1; k={k}; p={p}")
    }
}

/// A new Ed25519 key, as PKCS#8 PEM.
pub(crate) fn generate_ed25519() -> Result<String, String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "the system random source failed".to_owned())?;
    Ok(pem("PRIVATE KEY", pkcs8.as_ref()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An RSAPublicKey (PKCS#1) wrapped as a SubjectPublicKeyInfo (RFC 5280 §4.1), the form
/// DKIM verifiers read from `p=`.
fn subject_public_key_info(rsa_public_key: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x00]; // no unused bits
    bit_string.extend_from_slice(rsa_public_key);
    let mut inner = ALGORITHM.to_vec();
    inner.extend(der_item(0x03, &bit_string));
    der_item(0x30, &inner)
}

fn der_item(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ed25519_key_made_here_signs_and_publishes() {
        let pem = generate_ed25519().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = SigningKey::from_pem(pem.as_bytes(), DkimAlgorithm::Ed25519Sha256).unwrap();
        let record = key.txt_record();
        assert!(record.starts_with("v=DKIM1; k=ed25519; p="), "{record}");
        let public = base64::engine::general_purpose::STANDARD
            .decode(record.split("p=").nth(1).unwrap())
            .unwrap();
        let signature = key.sign(b"data").unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, b"data");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
            .verify(digest.as_ref(), &signature)
            .unwrap();
        let wrong = SigningKey::from_pem(pem.as_bytes(), DkimAlgorithm::RsaSha256).unwrap_err();
        assert!(wrong.contains("not an rsa-sha256 key"), "{wrong}");
        assert!(SigningKey::from_pem(b"junk", DkimAlgorithm::RsaSha256).is_err());
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der_item(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = der_item(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
