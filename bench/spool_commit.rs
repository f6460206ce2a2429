//! Benchmark (not a test): durable commits per second into a real spool on this disk,
//! with 1, 8 and 32 concurrent producers, group commit on versus one directory fsync and
//! one index transaction per message. Each commit is the full protocol: draft written
//! and fsynced, renamed into queue/, queue/ fsynced, SQLite committed (synchronous=FULL).
//!
//! Each configuration runs `--rounds` times, interleaved with the other mode so that the
//! disk's drift hits both alike; the median is printed.
//!
//! Spools are kept until the end: deleting thousands of files between runs would make
//! ext4 scan its recently freed inodes on every file creation in the next run.
//!
//! Run: `cargo bench --bench spool_commit [-- --seconds N --rounds N --dir PATH --size BYTES]`.
//! The spool goes in a temporary directory under `--dir` (default: `target/`, which is
//! on the project's disk; a tmpfs would measure nothing).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrymail::spool::{Envelope, Layout, Origin, RealFs, Recipient, Spool, SpoolOptions};

struct Args {
    seconds: f64,
    rounds: usize,
    dir: PathBuf,
    size: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 3.0,
        rounds: 3,
        dir: PathBuf::from("target"),
        size: 4096,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--dir" => a.dir = PathBuf::from(it.next().expect("--dir PATH")),
            "--size" => {
                a.size = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--size BYTES")
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn envelope() -> Envelope {
    let origin = Origin {
        kind: ferrymail::spool::OriginKind::Smtp,
        ..Origin::default()
    };
    Envelope::new(
        ferrymail::smtp::ReversePath::parse("bench@example.org").unwrap(),
        vec![Recipient::parse("rcpt@example.net").unwrap()],
        origin,
    )
}

/// Commits per second for `producers` threads over `seconds`, in a fresh spool under
/// `root` (deleted with it at the end).
fn run(a: &Args, root: &std::path::Path, producers: usize, group_commit: bool) -> f64 {
    let dir = tempfile::tempdir_in(root).unwrap();
    let dir = dir.keep();
    let (spool, _) = Spool::open(
        Layout::new(&dir),
        Arc::new(RealFs),
        SpoolOptions { group_commit },
    )
    .unwrap();
    let body = {
        let mut b = b"Subject: benchmark\r\n\r\n".to_vec();
        while b.len() < a.size {
            b.extend_from_slice(b"The quick brown fox jumps over the lazy dog, 0123456789.\r\n");
        }
        b
    };
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..producers {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let mut draft = spool.create_draft(envelope()).unwrap();
                    draft.write(&body).unwrap();
                    spool.commit_blocking(draft.seal().unwrap()).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(a.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    spool.close();
    done.load(Ordering::Relaxed) as f64 / elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let root = tempfile::tempdir_in(&a.dir).unwrap();
    println!(
        "durable commits/s, {}-byte messages, median of {} runs of {} s, spool under {}",
        a.size,
        a.rounds,
        a.seconds,
        a.dir.display()
    );
    println!(
        "{:>9}  {:>14}  {:>14}  {:>6}",
        "producers", "group commit", "fsync per msg", "ratio"
    );
    for producers in [1, 8, 32] {
        let (mut grouped, mut single) = (Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            grouped.push(run(&a, root.path(), producers, true));
            single.push(run(&a, root.path(), producers, false));
        }
        let (grouped, single) = (median(grouped), median(single));
        println!(
            "{producers:>9}  {grouped:>14.0}  {single:>14.0}  {:>5.2}x",
            grouped / single
        );
    }
}
