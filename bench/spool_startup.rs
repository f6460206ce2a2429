//! Benchmark (not a test) for README, "Benchmark"'s footprint target: fill a spool with N messages
//! through the real commit path, then time what a restart does: recovery when the index
//! is intact, recovery when the index was deleted (every file re-read), and a full
//! listing. Prints the times and this process's peak RSS after each step.
//!
//! Run: `cargo bench --bench spool_startup [-- --messages N --dir PATH]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ferrymail::spool::{
    Envelope, IndexReader, Layout, Origin, RealFs, Recipient, Spool, SpoolOptions,
};

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut messages = 100_000usize;
    let mut dir = PathBuf::from("target");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--messages" => {
                messages = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--messages N")
            }
            "--dir" => dir = PathBuf::from(args.next().expect("--dir PATH")),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    let root = tempfile::tempdir_in(&dir).unwrap();
    let layout = Layout::new(root.path());

    let started = Instant::now();
    let (spool, _) =
        Spool::open(layout.clone(), Arc::new(RealFs), SpoolOptions::default()).unwrap();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < messages {
                    let recipients = vec![
                        Recipient::parse("a@example.net").unwrap(),
                        Recipient::parse("b@example.net").unwrap(),
                    ];
                    let origin = Origin {
                        kind: ferrymail::spool::OriginKind::Smtp,
                        ..Origin::default()
                    };
                    let envelope = Envelope {
                        received_at: 1_800_000_000,
                        ..Envelope::new(
                            ferrymail::smtp::ReversePath::parse("bench@example.org").unwrap(),
                            recipients,
                            origin,
                        )
                    };
                    let mut draft = spool.create_draft(envelope).unwrap();
                    draft.write(&[b'x'; 2048]).unwrap();
                    spool.commit_blocking(draft.seal().unwrap()).unwrap();
                }
            });
        }
    });
    spool.close();
    println!(
        "filled {messages} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let base_rss = peak_rss_kib();

    let t = Instant::now();
    let (spool, report) =
        Spool::open(layout.clone(), Arc::new(RealFs), SpoolOptions::default()).unwrap();
    spool.close();
    println!(
        "start-up, index intact:  {:.2} s (reindexed {})",
        t.elapsed().as_secs_f64(),
        report.reindexed
    );

    let t = Instant::now();
    let reader = IndexReader::open(&layout).unwrap().unwrap();
    let mut listed = 0usize;
    reader
        .for_each_entry(None, |_| {
            listed += 1;
            Ok(())
        })
        .unwrap();
    drop(reader);
    println!(
        "listing {listed} entries: {:.2} s",
        t.elapsed().as_secs_f64()
    );

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", layout.index.display()));
    }
    let t = Instant::now();
    let (spool, report) =
        Spool::open(layout.clone(), Arc::new(RealFs), SpoolOptions::default()).unwrap();
    spool.close();
    println!(
        "start-up, index deleted: {:.2} s (reindexed {})",
        t.elapsed().as_secs_f64(),
        report.reindexed
    );
    println!(
        "peak RSS: {} KiB after filling; {} KiB after recovery and listing",
        base_rss,
        peak_rss_kib()
    );
}
