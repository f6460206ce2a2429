//! The listener under faults: a full disk (452, nothing partial, and accepting resumes
//! when space returns), connection floods (global and per-client caps answer 421), and
//! clients that talk before the greeting (554 5.5.0).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common;

use common::listener::{context, open_spool, serve};
use ferrymail::config::ListenKind;
use ferrymail::server::{ConnectionLimits, ServerContext, SessionConfig, Timeouts};
use ferrymail::spool::simfs::SimFs;
use ferrymail::spool::{Fs, IndexReader, Layout};
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
    // An untrusted client (no relay networks), sending to a domain of ours.
    let timeouts = Timeouts {
        greet_pause,
        ..Timeouts::default()
    };
    start_config("[]", limits, timeouts).await
}

/// A listener whose `relay_networks` are `networks` (a TOML array).
async fn start_config(networks: &str, limits: ConnectionLimits, timeouts: Timeouts) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "spool = \"/spool\"\n[accept]\nrelay_networks = {networks}\nlocal_domains = [\"example.net\"]\n"
    );
    let text = text.as_str();
    let config = ferrymail::config::parse(text, &dir.path().join("f.toml")).unwrap();
    let fs = SimFs::new();
    let layout = Layout::new(Path::new("/spool")).with_index(dir.path().join("index.sqlite3"));
    let spool = open_spool(&layout, Arc::new(fs.clone())).await;
    let shutdown = CancellationToken::new();
    let session = SessionConfig::from_config(&config, ListenKind::Smtp);
    let (addr, _) = serve(ServerContext {
        timeouts,
        limits,
        ..context(session, spool, shutdown.clone())
    })
    .await;
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
    let big = format!(
        "Subject: while full\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(98)).repeat(3000)
    );
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
        reserved: 2,
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

/// Connecting from `source` (a loopback address).
async fn connect_from(source: &str, to: std::net::SocketAddr) -> BufReader<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    BufReader::new(socket.connect(to).await.unwrap())
}

/// Six addresses holding every slot they may take leave the reserved ones to a client in
/// `relay_networks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_leave_reserved_slots_to_trusted_clients() {
    let limits = ConnectionLimits {
        max_connections: 16,
        max_per_client: 3,
        reserved: 4,
    };
    let f = start_config("[\"127.0.0.1/32\"]", limits, Timeouts::default()).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 2..8 {
        for _ in 0..3 {
            let mut c = connect_from(&format!("127.0.0.{i}"), f.addr).await;
            if reply(&mut c).await.starts_with("220") {
                held.push(c);
            } else {
                refused += 1;
            }
        }
    }
    assert_eq!(
        held.len(),
        12,
        "untrusted clients fill all but the reserved slots"
    );
    assert_eq!(refused, 6);
    for _ in 0..4 {
        let mut trusted = connect_from("127.0.0.1", f.addr).await;
        assert!(
            reply(&mut trusted).await.starts_with("220"),
            "a reserved slot"
        );
        held.push(trusted);
    }
    f.shutdown.cancel();
}

/// Content slower than `min_data_rate` runs out of time, though every byte arrives
/// well within the per-read timeout; content faster than it may take longer than that
/// timeout in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_slower_than_the_floor_times_out() {
    let timeouts = Timeouts {
        data: Duration::from_secs(3),
        min_data_rate: 100,
        ..Timeouts::default()
    };
    let f = start_config("[]", ConnectionLimits::default(), timeouts).await;
    let open = |f: &Fixture| {
        let addr = f.addr;
        async move {
            let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
            assert!(reply(&mut c).await.starts_with("220"));
            assert!(send(&mut c, "EHLO c.example").await.starts_with("250"));
            assert!(
                send(&mut c, "MAIL FROM:<a@c.example>")
                    .await
                    .starts_with("250")
            );
            assert!(
                send(&mut c, "RCPT TO:<b@example.net>")
                    .await
                    .starts_with("250")
            );
            assert!(send(&mut c, "DATA").await.starts_with("354"));
            c
        }
    };
    // 5 octets a second, one every 200 ms: never idle for long, yet far too slow.
    let mut slow = open(&f).await;
    let started = std::time::Instant::now();
    let closed = loop {
        if slow.get_mut().write_all(b"x").await.is_err() {
            break reply(&mut slow).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut peek = [0u8; 1];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::ZERO, slow.get_mut().peek(&mut peek)).await
            && n > 0
        {
            break reply(&mut slow).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never timed out"
        );
    };
    assert!(closed.starts_with("421"), "{closed}");

    // 5,000 octets a second for four seconds: longer than `data`, and fine.
    let mut fast = open(&f).await;
    let line = vec![b'y'; 998];
    for _ in 0..20 {
        fast.get_mut().write_all(&line).await.unwrap();
        fast.get_mut().write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(send(&mut fast, ".").await.starts_with("250"));
    f.shutdown.cancel();
}
