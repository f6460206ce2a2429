use std::io::Write;
use std::time::Duration;

use super::*;
use crate::bundle::format::{AUTH, COMPRESSION, Key, Writer};
use crate::bundle::peers::Peer;

fn peers() -> Peers {
    Peers {
        node: "hub".into(),
        peers: vec![Peer {
            node: "station".into(),
            key: Key::new(&[3u8; 32]),
            routes: vec!["station".into()],
        }],
        resend_after: Duration::from_secs(3600),
        max_age: Duration::from_secs(7 * 86400),
    }
}

/// An empty mail bundle with this header, as a file.
fn bundle(node: &str, to: &str, created_at: i64) -> File {
    let header = Header {
        kind: Kind::Mail,
        id: "0000000000000001".into(),
        node: node.into(),
        to: to.into(),
        created_at,
        route: None,
        compression: COMPRESSION.into(),
        auth: AUTH.into(),
    };
    let (bytes, _) = Writer::new(Vec::new(), &Key::new(&[3u8; 32]), &header)
        .unwrap()
        .finish()
        .unwrap();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&bytes).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f
}

#[test]
fn a_bundle_too_old_or_from_the_future_is_refused_as_a_replay() {
    let now = now_unix();
    assert!(check(&peers(), &mut bundle("station", "hub", now - 3600)).is_ok());
    let old = check(&peers(), &mut bundle("station", "hub", now - 8 * 86400)).unwrap_err();
    assert!(old.contains("refused as a replay"), "{old}");
    let ahead = check(&peers(), &mut bundle("station", "hub", now + 3 * 86400)).unwrap_err();
    assert!(ahead.contains("in the future"), "{ahead}");
}

#[test]
fn a_bundle_for_another_node_or_from_a_stranger_is_refused() {
    let now = now_unix();
    let other = check(&peers(), &mut bundle("station", "elsewhere", now)).unwrap_err();
    assert!(other.contains("is for node \"elsewhere\""), "{other}");
    let stranger = check(&peers(), &mut bundle("intruder", "hub", now)).unwrap_err();
    assert!(stranger.contains("no [[bundle_peer]]"), "{stranger}");
}
