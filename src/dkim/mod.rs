//! DKIM signing (RFC 6376; Ed25519 from RFC 8463), done once when a message is
//! committed: `canon` (relaxed canonicalisation, streaming for the body), `key` (PEM keys
//! in, signatures and the DNS record out), `signer` (which mail is signed, and the
//! `DKIM-Signature:` fields). Our own code on ring, which the TLS stack already brings:
//! the body is hashed as it streams, so signing a large message holds only its header.

pub mod canon;
pub mod key;
pub mod signer;

pub use signer::{Signer, Signing};
