//! Benchmark (not a test): one batch of messages over an emulated long thin link, the
//! case ferrymail exists for (600 ms RTT, 1 Mbit/s). The link is a user-space
//! TCP relay: each direction serialises at the bandwidth and delivers each chunk after the
//! one-way delay. The upstream is ferrymail's own listener (CHUNKING, PIPELINING), in
//! process; the client opens one connection through the link, sends the batch with
//! `send_batch`, and quits. Prints the time against the physical limit: the bytes at the
//! bandwidth plus the dialogue's unavoidable one-way trips (banner, EHLO there and back,
//! the batch's last reply back).
//!
//! Run: `cargo bench --bench thin_link [-- --messages N --size BYTES --delay-ms MS --kbit K]`.

use std::time::{Duration, Instant};

#[path = "../tests/common/listener.rs"]
#[allow(dead_code)]
mod listener;

use ferrymail::config::TlsPolicy;
use ferrymail::delivery::client::{ClientSettings, ClientTimeouts, Connection, Outgoing};
use ferrymail::delivery::content::Content;
use ferrymail::delivery::outcome::Outcome;
use ferrymail::spool::Recipient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

struct Args {
    messages: usize,
    size: usize,
    delay: Duration,
    bytes_per_sec: f64,
}

fn args() -> Args {
    let mut a = Args {
        messages: 200,
        size: 4096,
        delay: Duration::from_millis(300),
        bytes_per_sec: 125_000.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<f64>().ok())
                .expect("a number")
        };
        match flag.as_str() {
            "--messages" => a.messages = value() as usize,
            "--size" => a.size = value() as usize,
            "--delay-ms" => a.delay = Duration::from_secs_f64(value() / 1000.0),
            "--kbit" => a.bytes_per_sec = value() * 1000.0 / 8.0,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// One direction of the link: serialisation at `rate`, then `delay`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    rate: f64,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let sender = tokio::spawn(async move {
        while let Some((arrival, bytes)) = rx.recv().await {
            tokio::time::sleep_until(arrival.into()).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut link_free = Instant::now();
    let mut buf = vec![0u8; 1500];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let start = link_free.max(Instant::now());
        link_free = start + Duration::from_secs_f64(n as f64 / rate);
        if tx.send((link_free + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = sender.await;
}

/// A relay that forwards every connection to `target` over the emulated link.
async fn link(target: std::net::SocketAddr, delay: Duration, rate: f64) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, delay, rate));
            tokio::spawn(pipe(sr, cw, delay, rate));
        }
    });
    addr
}

#[tokio::main]
async fn main() {
    let a = args();
    // Our listener in process, as the client tests use it.
    let hub = listener::Listener::start(false, "").await;
    let via = link(hub.addr, a.delay, a.bytes_per_sec).await;
    let tls_config =
        ferrymail::delivery::settings::tls_client_config(rustls::RootCertStore::empty()).unwrap();
    let settings = ClientSettings {
        helo: "edge.test".into(),
        tls: TlsPolicy::None,
        tls_config,
        credentials: None,
        use_chunking: true,
        ferry: false,
        timeouts: ClientTimeouts::default(),
    };
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    let contents: Vec<Vec<u8>> = (0..a.messages)
        .map(|n| {
            let mut c = format!("Subject: thin link {n}\r\n\r\n").into_bytes();
            while c.len() < a.size {
                c.extend_from_slice(
                    b"The quick brown fox jumps over the lazy dog, 0123456789.\r\n",
                );
            }
            c
        })
        .collect();
    let batch: Vec<Outgoing<'_>> = contents
        .iter()
        .map(|c| Outgoing {
            id: "0TEST",
            sender: listener::edge_sender(),
            recipients: &rcpts,
            content: Content::Bytes(c),
            body: None,
            eight_bit: false,
            smtputf8: false,
            envid: None,
            ret: None,
        })
        .collect();

    let started = Instant::now();
    let mut conn = Connection::open(via, "hub.test", &settings)
        .await
        .expect("connect through the link");
    let opened = started.elapsed();
    let outcomes = conn.send_batch_unrecorded(&batch).await;
    let elapsed = started.elapsed();
    conn.quit().await;
    let delivered = outcomes
        .iter()
        .filter(|o| o[0].outcome == Outcome::Delivered)
        .count();

    let payload: usize = contents.iter().map(|c| c.len() + "MAIL FROM:<a@edge.test> SIZE=4096\r\nRCPT TO:<b@ours.example>\r\nBDAT 4096 LAST\r\nRSET\r\n".len()).sum();
    let one_way = a.delay.as_secs_f64();
    let limit = payload as f64 / a.bytes_per_sec + one_way /* banner */ + 2.0 * one_way /* EHLO */ + 2.0 * one_way /* batch out, last reply back */;
    let secs = elapsed.as_secs_f64();
    println!(
        "{} × {} B over {:.0} ms RTT, {:.0} kbit/s: delivered {delivered}/{}",
        a.messages,
        a.size,
        2.0 * one_way * 1000.0,
        a.bytes_per_sec * 8.0 / 1000.0,
        a.messages
    );
    println!(
        "connection ready after {:.2} s; batch done after {secs:.2} s",
        opened.as_secs_f64()
    );
    println!(
        "physical limit {limit:.2} s ({payload} B at the bandwidth + 5 one-way trips); ratio {:.2}x",
        secs / limit
    );
}
