//! Queue ids: 16 characters of Crockford base32, the first 11 the receive time in
//! microseconds (so ids sort by arrival), the last 5 random. An id is also a file name
//! in `queue/`, so `QueueId::parse` admits nothing that could name another path.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_CHARS: usize = 11;
pub const ID_LEN: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId([u8; ID_LEN]);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a queue id (16 characters, 0-9 and A-Z without I, L, O, U)")]
pub struct InvalidId(pub String);

impl QueueId {
    pub(crate) fn generate(now: SystemTime) -> QueueId {
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).expect("the OS random source works");
        let random = u64::from(u32::from_le_bytes(random));
        let mut out = [0u8; ID_LEN];
        for (i, slot) in out[..TIME_CHARS].iter_mut().enumerate() {
            let shift = 5 * (TIME_CHARS - 1 - i);
            *slot = ALPHABET[((micros >> shift) & 31) as usize];
        }
        for (i, slot) in out[TIME_CHARS..].iter_mut().enumerate() {
            let shift = 5 * (ID_LEN - TIME_CHARS - 1 - i);
            *slot = ALPHABET[((random >> shift) & 31) as usize];
        }
        QueueId(out)
    }

    pub fn parse(s: &str) -> Result<QueueId, InvalidId> {
        let upper = s.to_ascii_uppercase();
        let bytes = upper.as_bytes();
        if bytes.len() != ID_LEN || !bytes.iter().all(|b| ALPHABET.contains(b)) {
            return Err(InvalidId(s.to_owned()));
        }
        let mut out = [0u8; ID_LEN];
        out.copy_from_slice(bytes);
        Ok(QueueId(out))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ids are ASCII")
    }
}

impl FromStr for QueueId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        QueueId::parse(s)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for QueueId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueueId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QueueId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = QueueId::generate(t);
        let b = QueueId::generate(t + Duration::from_micros(1));
        assert!(a.as_str()[..11] < b.as_str()[..11]);
        assert_eq!(QueueId::parse(a.as_str()).unwrap(), a);
        assert_eq!(QueueId::parse(&a.as_str().to_lowercase()).unwrap(), a);
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789ABCDEI",
            "0123456789ABCDEFG",
        ] {
            assert!(QueueId::parse(bad).is_err(), "{bad}");
        }
    }
}
