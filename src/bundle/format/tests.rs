use super::*;
use crate::bundle::record::{self, Record};

fn header() -> Header {
    Header {
        kind: Kind::Mail,
        id: "0000000000000001".into(),
        node: "station".into(),
        to: "hub".into(),
        created_at: 1000,
        route: Some("upstream".into()),
        compression: COMPRESSION.into(),
        auth: AUTH.into(),
    }
}

fn key() -> Key {
    Key::new(&[7u8; 32])
}

/// A bundle of three chunks, one receipt record each (any record will do here).
fn three_chunks() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &key(), &header()).unwrap();
    for i in 0..3 {
        let receipt = record::Receipt {
            bundle: format!("chunk {i} {}", "x".repeat(200)),
            ..Default::default()
        };
        w.add(&record::encode_receipt(&receipt)).unwrap();
        w.seal_chunk().unwrap();
    }
    let (out, totals) = w.finish().unwrap();
    assert_eq!((totals.chunks, totals.records), (3, 3));
    assert_eq!(totals.bytes, out.len() as u64);
    out
}

/// Every frame of `bytes`, read under the test key.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut r = Reader::open(bytes).unwrap();
    assert!(r.authenticate(&key()));
    let mut out = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        out.push(f);
    }
    out
}

/// Where chunk `seq`'s compressed bytes start, and how many there are.
fn chunk_bytes(bytes: &[u8], seq: u64) -> (usize, usize) {
    let (_, at, len) = chunk_frame(bytes, seq);
    (at, len)
}

/// Where chunk `seq`'s frame line starts, where its bytes start, and how many.
fn chunk_frame(bytes: &[u8], seq: u64) -> (usize, usize, usize) {
    let marker = format!("chunk {seq} ");
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap();
    let line_end = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let line = std::str::from_utf8(&bytes[at..line_end]).unwrap();
    let zlen: usize = line.split(' ').nth(2).unwrap().parse().unwrap();
    (at, line_end, zlen)
}

#[test]
fn what_is_written_reads_back_authentic_chunk_by_chunk() {
    let bytes = three_chunks();
    let frames = frames(&bytes);
    assert_eq!(frames.len(), 4);
    for (i, f) in frames[..3].iter().enumerate() {
        let Frame::Chunk(c) = f else { panic!("{f:?}") };
        assert!(c.intact && c.authentic);
        let raw = c.records().unwrap();
        let records: Vec<_> = record::decode(&raw).collect::<Result<_, _>>().unwrap();
        let [Record::Receipt(r)] = records.as_slice() else {
            panic!("{records:?}")
        };
        assert!(r.bundle.starts_with(&format!("chunk {i} ")));
    }
    assert!(matches!(
        frames[3],
        Frame::End {
            chunks: 3,
            records: 3,
            authentic: true
        }
    ));
}

#[test]
fn another_key_or_a_changed_header_does_not_authenticate() {
    let bytes = three_chunks();
    let mut r = Reader::open(bytes.as_slice()).unwrap();
    assert!(!r.authenticate(&Key::new(&[8u8; 32])));
    assert!(r.next_frame().is_err(), "nothing is read unauthenticated");
    let changed = String::from_utf8_lossy(&bytes).replacen("\"to\":\"hub\"", "\"to\":\"hux\"", 1);
    let mut changed_bytes = bytes.clone();
    changed_bytes[..changed.len().min(200)]
        .copy_from_slice(&changed.as_bytes()[..changed.len().min(200)]);
    let mut r = Reader::open(changed_bytes.as_slice()).unwrap();
    assert_eq!(r.header().to, "hux");
    assert!(!r.authenticate(&key()));
}

#[test]
fn a_damaged_chunk_fails_its_crc_and_the_others_still_read() {
    let mut bytes = three_chunks();
    let (at, len) = chunk_bytes(&bytes, 1);
    bytes[at + len / 2] ^= 0x40;
    let frames = frames(&bytes);
    let verdicts: Vec<(bool, bool)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Chunk(c) => Some((c.intact, c.authentic)),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts, [(true, true), (false, false), (true, true)]);
    assert!(matches!(
        frames[3],
        Frame::End {
            authentic: true,
            ..
        }
    ));
}

#[test]
fn a_chunk_changed_with_its_crc_recomputed_is_intact_but_not_authentic() {
    let mut bytes = three_chunks();
    let (line_start, at, len) = chunk_frame(&bytes, 2);
    bytes[at + len / 2] ^= 0x40;
    let crc = crc32fast::hash(&bytes[at..at + len]);
    let line = String::from_utf8(bytes[line_start..at].to_vec()).unwrap();
    let mut fields: Vec<String> = line.trim_end().split(' ').map(str::to_owned).collect();
    fields[4] = format!("{crc:08x}");
    let new_line = format!("{}\n", fields.join(" "));
    assert_eq!(new_line.len(), line.len());
    bytes[line_start..at].copy_from_slice(new_line.as_bytes());
    let frames = frames(&bytes);
    let Frame::Chunk(c) = &frames[2] else {
        panic!("{:?}", frames[2])
    };
    assert!(c.intact && !c.authentic);
}

#[test]
fn a_cut_bundle_reads_up_to_the_cut_and_says_so() {
    let bytes = three_chunks();
    let (at, len) = chunk_bytes(&bytes, 2);
    let frames = frames(&bytes[..at + len / 2]);
    assert_eq!(frames.len(), 3);
    assert!(matches!(frames[2], Frame::Truncated));
    let frames_at_line = self::frames(&bytes[..at + len]);
    assert!(matches!(frames_at_line.last(), Some(Frame::Truncated)));
}

#[test]
fn a_chunk_never_decompresses_past_its_declared_length() {
    let big = vec![b'a'; 4 << 20];
    let z = zstd::bulk::compress(&big, 3).unwrap();
    let chunk = Chunk {
        seq: 0,
        raw_len: 1000,
        intact: true,
        authentic: true,
        z,
    };
    assert!(chunk.records().is_err());
}
