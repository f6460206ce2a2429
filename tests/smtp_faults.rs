//! The listener under faults: a full disk (452, nothing partial, and accepting resumes
//! when space returns), connection floods (global and per-client caps answer 421), and
//! clients that talk before the greeting (554 5.5.0).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrymail::config::ListenKind;
use ferrymail::server::{ConnectionLimits, ServerContext, SessionConfig, Timeouts};
use ferrymail::spool::simfs::SimFs;
use ferrymail::spool::{Fs, IndexReader, Layout, Spool, SpoolOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Fixture {
    addr: std::net::SocketAddr,
    layout: Layout,
    fs: SimFs,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(limits: ConnectionLimits) -> Fixture {
    start_with(limits, Duration::ZERO).await
}

async fn start_with(limits: ConnectionLimits, greet_pause: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // An untrusted client (no relay networks), sending to a domain of ours.
    let text =
        "spool = \"/spool\"\n[accept]\nrelay_networks = []\nlocal_domains = [\"example.net\"]\n";
    let config = ferrymail::config::parse(text, &dir.path().join("f.toml")).unwrap();
    let fs = SimFs::new();
    let layout = Layout::new(Path::new("/spool")).with_index(dir.path().join("index.sqlite3"));
    let (l, f) = (layout.clone(), fs.clone());
    let (spool, _) = tokio::task::spawn_blocking(move || {
        Spool::open(l, Arc::new(f), SpoolOptions::default()).unwrap()
    })
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let ctx = Arc::new(ServerContext {
        session: Arc::new(SessionConfig::from_config(&config, ListenKind::Smtp)),
        spool,
        timeouts: Timeouts {
            greet_pause,
            ..Timeouts::default()
        },
        shutdown: shutdown.clone(),
        tls: None,
        auth: None,
        etrn: None,
        stats: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ferrymail::server::serve(
        listener,
        Arc::new(ferrymail::current::Current::from_arc(ctx)),
        limits,
    ));
    Fixture {
        addr,
        layout,
        fs,
        shutdown,
        _dir: dir,
    }
}

async fn reply(r: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_owned();
        }
    }
}

async fn send(r: &mut BufReader<TcpStream>, line: &str) -> String {
    r.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    reply(r).await
}

/// One message over a fresh connection; returns the reply to its end of data.
async fn one_message(f: &Fixture, body: &str) -> String {
    let mut c = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
    reply(&mut c).await;
    send(&mut c, "EHLO client.example").await;
    assert!(
        send(&mut c, "MAIL FROM:<a@client.example>")
            .await
            .starts_with("250")
    );
    assert!(
        send(&mut c, "RCPT TO:<b@example.net>")
            .await
            .starts_with("250")
    );
    assert!(send(&mut c, "DATA").await.starts_with("354"));
    send(&mut c, &format!("{body}\r\n.")).await
}

fn queued(layout: &Layout) -> usize {
    IndexReader::open(layout)
        .unwrap()
        .map_or(0, |r| r.all_ids().unwrap().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_452_keeps_nothing_and_recovers() {
    let f = start(ConnectionLimits::default()).await;
    assert!(one_message(&f, "Subject: before").await.starts_with("250"));
    f.fs.set_full(true);
    let big = format!("Subject: while full\r\n\r\n{}", "x".repeat(300_000));
    let refused = one_message(&f, &big).await;
    assert!(refused.starts_with("452 4.3.1"), "{refused}");
    assert_eq!(queued(&f.layout), 1);
    assert!(
        f.fs.list_dir(&f.layout.tmp).unwrap().is_empty(),
        "a partial draft was left"
    );
    assert_eq!(
        f.fs.list_dir(&f.layout.queue).unwrap().len(),
        1,
        "a partial file reached queue/"
    );
    f.fs.set_full(false);
    assert!(
        one_message(&f, "Subject: after").await.starts_with("250"),
        "accepting resumes"
    );
    assert_eq!(queued(&f.layout), 2);
    f.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_get_421() {
    let f = start(ConnectionLimits {
        max_connections: 8,
        max_per_client: 4,
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut c = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
        assert!(reply(&mut c).await.starts_with("220"));
        open.push(c);
    }
    // The fifth connection from the same address is turned away.
    let mut extra = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
    assert!(reply(&mut extra).await.starts_with("421 4.3.2"));
    // The first four still work, and a slot frees when one leaves.
    assert!(send(&mut open[0], "NOOP").await.starts_with("250"));
    assert!(send(&mut open[0], "QUIT").await.starts_with("221"));
    drop(open.remove(0));
    let ok = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut c = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
            if reply(&mut c).await.starts_with("220") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "the freed slot was not reused");
    f.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_talking_before_the_greeting_is_refused() {
    let f = start_with(ConnectionLimits::default(), Duration::from_millis(300)).await;
    let mut early = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
    early
        .get_mut()
        .write_all(b"EHLO early.example\r\n")
        .await
        .unwrap();
    assert!(reply(&mut early).await.starts_with("554 5.5.0"));
    let mut rest = String::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), early.read_line(&mut rest))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "not closed: {rest:?}");
    // A patient client is served.
    let mut patient = BufReader::new(TcpStream::connect(f.addr).await.unwrap());
    assert!(reply(&mut patient).await.starts_with("220"));
    assert!(
        send(&mut patient, "EHLO patient.example")
            .await
            .starts_with("250")
    );
    f.shutdown.cancel();
}
