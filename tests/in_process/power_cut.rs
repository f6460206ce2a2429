//! The commit protocol under simulated power cuts: the spool runs on `SimFs`, which
//! records the crash image after every file-system operation. For every prefix of the
//! recorded operations we "cut the power", recover, and check: every commit that
//! returned success is listed once with its exact bytes, nothing partial or unknown
//! appears, and `tmp/` is clean. Also: failed fsyncs are never turned into success.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use ferrymail::spool::envelope::{BodySum, read_body, read_stored};
use ferrymail::spool::simfs::{Fault, SimFs};
use ferrymail::spool::{
    Envelope, Fs, IndexReader, Layout, Origin, QueueId, Recipient, Spool, SpoolOptions,
    StoredMessage, Trailer, index,
};

fn envelope(n: usize) -> Envelope {
    let recipients = vec![
        Recipient::parse(&format!("rcpt{n}@example.net")).unwrap(),
        Recipient::parse("all@example.net").unwrap(),
    ];
    let origin = Origin {
        kind: ferrymail::spool::OriginKind::Smtp,
        ..Origin::default()
    };
    Envelope {
        received_at: 1_800_000_000 + n as i64,
        ..Envelope::new(
            ferrymail::smtp::ReversePath::parse(&format!("sender{n}@example.org")).unwrap(),
            recipients,
            origin,
        )
    }
}

fn body(n: usize) -> Vec<u8> {
    let mut b = format!("Subject: message {n}\r\n\r\n").into_bytes();
    for line in 0..(n * 37 % 200) {
        b.extend_from_slice(format!("line {line} of message {n} \u{e9}\r\n").as_bytes());
    }
    b
}

/// Writes and commits message `n`; returns its id, bytes and trailer.
fn commit(spool: &Spool, n: usize) -> (QueueId, Vec<u8>, Trailer, Envelope) {
    let env = envelope(n);
    let bytes = body(n);
    let mut draft = spool.create_draft(env.clone()).unwrap();
    let half = bytes.len() / 2;
    draft.write(&bytes[..half]).unwrap();
    draft.write(&bytes[half..]).unwrap();
    let sealed = draft.seal().unwrap();
    let mut sum = BodySum::default();
    sum.update(&bytes);
    let trailer = sum.trailer();
    let id = spool.commit_blocking(sealed).unwrap();
    (id, bytes, trailer, env)
}

struct Acked {
    /// Operations recorded when the commit had returned.
    at_op: usize,
    bytes: Vec<u8>,
    trailer: Trailer,
    envelope: Envelope,
}

fn layout(index_dir: &Path) -> Layout {
    Layout::new(Path::new("/spool")).with_index(index_dir.join("index.sqlite3"))
}

#[test]
fn every_acknowledged_commit_survives_a_power_cut_at_every_step() {
    let fs = SimFs::new();
    let work = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(
        layout(work.path()),
        Arc::new(fs.clone()),
        SpoolOptions::default(),
    )
    .unwrap();
    let start = fs.ops();
    let mut acked: HashMap<QueueId, Acked> = HashMap::new();
    let mut record = |(id, bytes, trailer, envelope): (QueueId, Vec<u8>, Trailer, Envelope),
                      at_op| {
        acked.insert(
            id,
            Acked {
                at_op,
                bytes,
                trailer,
                envelope,
            },
        );
    };
    for n in 0..5 {
        let c = commit(&spool, n);
        record(c, fs.ops());
    }
    // Concurrent producers, so groups of several commits share one fsync.
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (5..13)
            .map(|n| {
                let spool = spool.clone();
                let fs = fs.clone();
                scope.spawn(move || {
                    let c = commit(&spool, n);
                    (c, fs.ops())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, at) in results {
        record(c, at);
    }
    spool.close();
    let total = fs.ops();
    assert!(
        total - start > 13 * 4,
        "expected several operations per commit, saw {}",
        total - start
    );

    let mut survivors_seen = 0;
    for crash in start..=total {
        for index_survives in [false, true] {
            let image = fs.crash_image(crash);
            let dir = tempfile::tempdir().unwrap();
            let layout = layout(dir.path());
            if index_survives {
                // The index holds exactly the commits acknowledged before the cut.
                let mut conn = index::open_writer(&layout.index).unwrap();
                let tx = conn.transaction().unwrap();
                for a in acked.values().filter(|a| a.at_op <= crash) {
                    let stored = StoredMessage {
                        envelope: a.envelope.clone(),
                        body_offset: 0,
                        trailer: a.trailer,
                        prepend: Vec::new(),
                    };
                    index::insert_message(&tx, &stored, 0, None, &|_, _| None).unwrap();
                }
                tx.commit().unwrap();
            }
            let (recovered, _) = Spool::open(
                layout.clone(),
                Arc::new(image.clone()),
                SpoolOptions::default(),
            )
            .unwrap();
            recovered.close();

            let reader = IndexReader::open(&layout).unwrap().unwrap();
            let listed = reader.all_ids().unwrap();
            let unique: HashSet<_> = listed.iter().collect();
            assert_eq!(
                unique.len(),
                listed.len(),
                "crash at {crash}: a message listed twice"
            );
            for id in &listed {
                let a = acked
                    .get(id)
                    .unwrap_or_else(|| panic!("crash at {crash}: unknown message {id} listed"));
                let path = layout.message_path(*id);
                let stored = read_stored(&image, &path).unwrap();
                assert_eq!(
                    read_body(&image, &path, &stored).unwrap(),
                    a.bytes,
                    "crash at {crash}: {id} damaged"
                );
            }
            for (id, a) in &acked {
                if a.at_op <= crash {
                    assert!(
                        unique.contains(id),
                        "crash at {crash} (index kept: {index_survives}): acknowledged {id} lost"
                    );
                }
            }
            assert!(
                image.list_dir(&layout.tmp).unwrap().is_empty(),
                "crash at {crash}: tmp/ not swept"
            );
            survivors_seen += listed.len();
        }
    }
    assert!(survivors_seen > 0);
}

/// A spool on a fresh `SimFs`, its index in a real temporary directory.
fn simulated_spool() -> (SimFs, tempfile::TempDir, Layout, Spool) {
    let fs = SimFs::new();
    let work = tempfile::tempdir().unwrap();
    let layout = layout(work.path());
    let (spool, _) = Spool::open(
        layout.clone(),
        Arc::new(fs.clone()),
        SpoolOptions::default(),
    )
    .unwrap();
    (fs, work, layout, spool)
}

#[test]
fn a_failed_file_fsync_discards_the_draft() {
    let (fs, _work, layout, spool) = simulated_spool();
    let mut draft = spool.create_draft(envelope(1)).unwrap();
    draft.write(&body(1)).unwrap();
    fs.inject(Fault::FileSync);
    assert!(draft.seal().is_err());
    assert!(
        fs.list_dir(&layout.tmp).unwrap().is_empty(),
        "draft left behind"
    );
    // The spool goes on working.
    let (id, ..) = commit(&spool, 2);
    spool.close();
    let reader = IndexReader::open(&layout).unwrap().unwrap();
    assert_eq!(reader.all_ids().unwrap(), vec![id]);
}

#[test]
fn a_failed_directory_fsync_fails_the_commit_and_queues_nothing() {
    let (fs, _work, layout, spool) = simulated_spool();
    let mut draft = spool.create_draft(envelope(1)).unwrap();
    draft.write(&body(1)).unwrap();
    let sealed = draft.seal().unwrap();
    fs.inject(Fault::DirSync);
    assert!(spool.commit_blocking(sealed).is_err());
    assert!(
        fs.list_dir(&layout.queue).unwrap().is_empty(),
        "unacknowledged file left in queue/"
    );
    let reader = IndexReader::open(&layout).unwrap().unwrap();
    assert!(reader.all_ids().unwrap().is_empty());
    drop(reader);
    let (id, ..) = commit(&spool, 2);
    spool.close();
    // And a restart does not resurrect the failed one.
    let (again, _) = Spool::open(
        layout.clone(),
        Arc::new(fs.crash_image(fs.ops())),
        SpoolOptions::default(),
    )
    .unwrap();
    again.close();
    let reader = IndexReader::open(&layout).unwrap().unwrap();
    assert_eq!(reader.all_ids().unwrap(), vec![id]);
}
