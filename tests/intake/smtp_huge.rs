//! Huge input against the real daemon, with its memory watched: 100 MiB without a CRLF in
//! command mode (discarded, then 500, session in step), a 1 MiB line inside DATA
//! (accepted), and a 30 MiB message over the 25 MiB limit (552 after the end of data,
//! nothing queued). The daemon's resident memory must stay flat throughout.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::Env;
use ferrymail::control::{Request, Response, client};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reply(r: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_owned();
        }
    }
}

fn connect(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert!(reply(&mut r).starts_with("220"));
    (s, r)
}

fn command(w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str) -> String {
    w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    reply(r)
}

/// Writes `total` bytes of `fill` in 1 MiB pieces.
fn stream(w: &mut TcpStream, total: usize, fill: u8) {
    let piece = vec![fill; 1 << 20];
    let mut left = total;
    while left > 0 {
        let n = left.min(piece.len());
        w.write_all(&piece[..n]).unwrap();
        left -= n;
    }
}

#[test]
fn huge_input_keeps_memory_flat() {
    let env = Env::new();
    let daemon = env.start_daemon();
    let addr = match client::request(
        &env.control_socket(),
        &Request::Status,
        Duration::from_secs(5),
    ) {
        Ok(Response::Status(s)) => s.listeners[0].clone(),
        other => panic!("{other:?}"),
    };
    let pid = daemon.pid();
    let idle = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(idle));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // 100 MiB with no line end in command mode.
    let (mut w, mut r) = connect(&addr);
    assert!(command(&mut w, &mut r, "EHLO client.example").starts_with("250"));
    stream(&mut w, 100 << 20, b'A');
    assert!(
        command(&mut w, &mut r, "").starts_with("500 5.5.2"),
        "over-long line"
    );
    assert!(
        command(&mut w, &mut r, "NOOP").starts_with("250"),
        "in step afterwards"
    );

    // One 1 MiB line inside DATA: read to the end in bounded memory, then refused
    // (RFC 5322 §2.1.1); then a message of many RFC 5322 lines, queued.
    assert!(command(&mut w, &mut r, "MAIL FROM:<a@client.example>").starts_with("250"));
    assert!(command(&mut w, &mut r, "RCPT TO:<b@example.net>").starts_with("250"));
    assert!(command(&mut w, &mut r, "DATA").starts_with("354"));
    w.write_all(b"Subject: long line\r\n\r\n").unwrap();
    stream(&mut w, 1 << 20, b'x');
    assert!(command(&mut w, &mut r, "\r\n.").starts_with("554 5.6.0"));
    assert!(command(&mut w, &mut r, "MAIL FROM:<a@client.example>").starts_with("250"));
    assert!(command(&mut w, &mut r, "RCPT TO:<b@example.net>").starts_with("250"));
    assert!(command(&mut w, &mut r, "DATA").starts_with("354"));
    w.write_all(b"Subject: many lines\r\n\r\n").unwrap();
    for _ in 0..1000 {
        stream(&mut w, 998, b'x');
        w.write_all(b"\r\n").unwrap();
    }
    assert!(command(&mut w, &mut r, ".").starts_with("250 2.0.0 Ok"));

    // 30 MiB over the 25 MiB limit: read to the end, then 552; nothing queued.
    assert!(command(&mut w, &mut r, "MAIL FROM:<a@client.example>").starts_with("250"));
    assert!(command(&mut w, &mut r, "RCPT TO:<b@example.net>").starts_with("250"));
    assert!(command(&mut w, &mut r, "DATA").starts_with("354"));
    for _ in 0..30 {
        stream(&mut w, (1 << 20) - 2, b'y');
        w.write_all(b"\r\n").unwrap();
    }
    assert!(command(&mut w, &mut r, ".").starts_with("552 5.3.4"));
    assert!(command(&mut w, &mut r, "QUIT").starts_with("221"));

    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(
        env.queued().len(),
        1,
        "only the message of RFC 5322 lines is queued"
    );
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("daemon RSS: idle {idle} KiB, peak {peak} KiB");
    assert!(
        peak < idle + 48 * 1024,
        "memory grew from {idle} KiB to {peak} KiB"
    );
    daemon.stop();
}
