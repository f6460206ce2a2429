//! XFERRY between two ferrymail nodes (docs/xferry.md), with our own listener in process
//! as the hub and the delivery client as the edge, through a proxy that counts, records,
//! cuts or rewrites what passes:
//! - compression is used only where both ends are configured for it, and a peer without
//!   the extension sees plain SMTP, byte for byte what it would see from a client that
//!   was never configured for it;
//! - a decompression bomb is refused with nothing queued, and the session goes on;
//! - a large message cut at several offsets resumes where the hub's kept bytes end and
//!   arrives once, byte for byte; three cuts in a row cost little more than the message;
//! - a resume offer that cannot be right (past the end, another key) and kept bytes that
//!   do not match fall back to sending the message whole.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::listener::Listener;
use ferrymail::config::TlsPolicy;
use ferrymail::delivery::client::{ClientSettings, ClientTimeouts, Connection, Outgoing};
use ferrymail::delivery::content::{Content, StoredFile};
use ferrymail::delivery::outcome::{Classified, Outcome};
use ferrymail::spool::Recipient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Rewrite = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Where a connection through the proxy is cut, in bytes from the edge.
#[derive(Clone, Copy)]
enum Cut {
    Never,
    /// The hub gets an end of input after the last byte, and its replies are read.
    At(usize),
    /// The hub's socket is closed outright: its next reply meets a reset.
    Hard(usize),
}

/// Between the edge and the hub: records what the edge sends, cuts the connection as
/// `cut` says, and rewrites the hub's reply lines.
struct Proxy {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
}

async fn proxy(target: SocketAddr, cut: Cut, rewrite: Option<Rewrite>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        while let Ok((edge, _)) = listener.accept().await {
            let hub = TcpStream::connect(target).await.unwrap();
            // As the client and the listener do: a reply relayed in two writes must not
            // wait for a delayed ACK, or loopback looks like a 40 ms path.
            edge.set_nodelay(true).unwrap();
            hub.set_nodelay(true).unwrap();
            tokio::spawn(relay(edge, hub, cut, rewrite.clone(), record.clone()));
        }
    });
    Proxy { addr, sent }
}

/// One connection through the proxy. At the cut the edge's side is closed at once and
/// the hub's gets an end of input after every byte before the cut, as a link that went
/// down between them would leave it; the hub's replies are then read and dropped (or,
/// for a hard cut, its socket is closed too).
async fn relay(
    edge: TcpStream,
    hub: TcpStream,
    cut: Cut,
    rewrite: Option<Rewrite>,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut edge = Some(edge);
    let (mut hub_in, mut hub_out) = hub.into_split();
    let (mut left, hard) = match cut {
        Cut::Never => (usize::MAX, false),
        Cut::At(n) => (n, false),
        Cut::Hard(n) => (n, true),
    };
    let (mut up, mut down) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    let mut lines = Vec::new();
    loop {
        tokio::select! {
            r = async { edge.as_mut().unwrap().read(&mut up).await }, if edge.is_some() => {
                let n = match r {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n.min(left),
                };
                record.lock().unwrap().extend_from_slice(&up[..n]);
                left -= n;
                if n == 0 || hub_out.write_all(&up[..n]).await.is_err() || left == 0 {
                    if hard && left == 0 {
                        // What was written reaches the hub before the reset: closing
                        // with its replies unread resets the connection, and a reset
                        // throws away whatever this side had not yet sent.
                        until_sent(&hub_out).await;
                        return;
                    }
                    edge = None;
                    let _ = hub_out.shutdown().await;
                }
            }
            r = hub_in.read(&mut down) => {
                let n = r.unwrap_or(0);
                if n == 0 {
                    return;
                }
                lines.extend_from_slice(&down[..n]);
                while let Some(end) = lines.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = lines.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line).into_owned();
                    let out = rewrite.as_ref().map_or_else(|| line.clone(), |f| f(&line));
                    if let Some(e) = edge.as_mut() {
                        let _ = e.write_all(out.as_bytes()).await;
                    }
                }
            }
        }
    }
}

/// Waits (up to ten seconds) until the peer has acknowledged every byte written to
/// `out` (SIOCOUTQ, tcp(7)).
async fn until_sent(out: &tokio::net::tcp::OwnedWriteHalf) {
    use std::os::fd::AsRawFd;
    let fd = out.as_ref().as_raw_fd();
    for _ in 0..2000 {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int; `fd` is the open socket `out` holds.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
        if rc != 0 || queued == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Proxy {
    fn sent(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }
    fn sent_text(&self) -> String {
        String::from_utf8_lossy(&self.sent()).into_owned()
    }
}

fn settings(ferry: bool) -> ClientSettings {
    ClientSettings {
        helo: "edge.test".into(),
        tls: TlsPolicy::None,
        tls_config:
            ferrymail::delivery::settings::tls_client_config(rustls::RootCertStore::empty())
                .unwrap(),
        credentials: None,
        use_chunking: true,
        ferry,
        timeouts: ClientTimeouts {
            connect: Duration::from_secs(5),
            ..ClientTimeouts::default()
        },
    }
}

/// Mail-like text: headers and sentences, compressible as letters are.
fn letter(n: usize, len: usize) -> Vec<u8> {
    let mut c = format!(
        "From: a@edge.test\r\nTo: b@ours.example\r\nSubject: field report {n}\r\nMessage-ID: <{n}@edge.test>\r\n\r\n"
    )
    .into_bytes();
    let mut i = n;
    while c.len() < len {
        c.extend_from_slice(
            format!(
                "Reading {i}: the pump at station {} ran {} hours today.\r\n",
                i % 17,
                i % 23
            )
            .as_bytes(),
        );
        i += 1;
    }
    c
}

/// Base64-like lines of pseudo-random bytes: as incompressible as an attachment.
fn attachment(seed: u64, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed | 1;
    let mut c = b"Subject: attachment\r\n\r\n".to_vec();
    while c.len() < len {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.push(ALPHABET[(x % 64) as usize]);
        }
        c.extend_from_slice(b"\r\n");
    }
    c
}

fn in_file(dir: &std::path::Path, name: &str, content: &[u8]) -> StoredFile {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    StoredFile {
        path,
        offset: 0,
        len: content.len() as u64,
        prepend: Vec::new(),
    }
}

fn outgoing<'a>(id: &'a str, rcpts: &'a [Recipient], content: Content<'a>) -> Outgoing<'a> {
    Outgoing {
        id,
        sender: common::listener::edge_sender(),
        recipients: rcpts,
        content,
        body: None,
        eight_bit: false,
        smtputf8: false,
        envid: None,
        ret: None,
    }
}

async fn send(via: SocketAddr, ferry: bool, batch: &[Outgoing<'_>]) -> Vec<Vec<Classified>> {
    let mut conn = Connection::open(via, "hub.test", &settings(ferry))
        .await
        .unwrap();
    let out = conn.send_batch_unrecorded(batch).await;
    conn.quit().await;
    out
}

fn delivered(out: &[Vec<Classified>]) -> bool {
    out.iter()
        .flatten()
        .all(|c| c.outcome == Outcome::Delivered)
}

/// What the hub stored for each message, in the order sent: the content behind our
/// own `Received:`.
fn assert_stored_once(hub: &Listener, contents: &[&[u8]]) {
    let stored = hub.stored();
    assert_eq!(stored.len(), contents.len(), "messages stored");
    for c in contents {
        let n = stored.iter().filter(|s| s.ends_with(c)).count();
        assert_eq!(n, 1, "a message must arrive once, byte for byte");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_only_where_both_ends_are_configured_and_plain_peers_see_plain_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    // More letters than the pipelining window holds: the later ones are written only
    // once earlier ones are answered, and can name them, however fast the path is.
    let count = ferrymail::delivery::window::WINDOW_MESSAGES + 8;
    let letters: Vec<Vec<u8>> = (0..count).map(|n| letter(n, 6000)).collect();
    let big = letter(999, 700_000);
    let file = in_file(dir.path(), "big", &big);
    let mut batch: Vec<Outgoing<'_>> = letters
        .iter()
        .map(|c| outgoing("0SMALL", &rcpts, Content::Bytes(c)))
        .collect();
    batch.push(outgoing("0BIG", &rcpts, Content::File(&file)));
    let raw: usize = letters.iter().map(Vec::len).sum::<usize>() + big.len();
    let mut transcripts = Vec::new();
    for (hub_ferry, edge_ferry) in [(true, true), (true, false), (false, true), (false, false)] {
        let hub = Listener::start(hub_ferry, "").await;
        let p = proxy(hub.addr, Cut::Never, None).await;
        let conn = Connection::open(p.addr, "hub.test", &settings(edge_ferry))
            .await
            .unwrap();
        assert_eq!(
            conn.capabilities().ferry.zstd,
            hub_ferry,
            "EHLO offers XFERRY"
        );
        assert_eq!(conn.ferry().zstd, hub_ferry && edge_ferry);
        conn.quit().await;
        let out = send(p.addr, edge_ferry, &batch).await;
        assert!(delivered(&out), "{hub_ferry} {edge_ferry}: {out:?}");
        let mut contents: Vec<&[u8]> = letters.iter().map(Vec::as_slice).collect();
        contents.push(&big);
        assert_stored_once(&hub, &contents);
        let wire = p.sent();
        let text = p.sent_text();
        if hub_ferry && edge_ferry {
            assert!(text.contains(" XZSTD") && text.contains(" XRESUME="));
            // Later letters are compressed against earlier ones the hub committed.
            assert!(text.contains(" XZSTD="), "references to earlier messages");
            assert!(wire.len() < raw / 4, "{} bytes for {raw}", wire.len());
        } else {
            assert!(!text.contains("XZSTD") && !text.contains("XRESUME"));
            assert!(wire.len() > raw, "{} bytes for {raw}", wire.len());
        }
        assert!(hub.partials().is_empty(), "nothing kept once committed");
        transcripts.push(wire);
    }
    // The same client, configured or not, says the same to a peer without XFERRY (the
    // EHLO sessions that only looked at capabilities included).
    assert!(
        transcripts[2] == transcripts[3],
        "plain SMTP, byte for byte"
    );
}

/// A connection to `addr`, its banner read (a client that talks first is refused).
async fn connected(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    while !banner.ends_with(b"\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        banner.push(byte[0]);
    }
    assert!(banner.starts_with(b"220 "));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused_with_nothing_queued() {
    let hub = Listener::start(true, "").await;
    let bomb = ferrymail::ferry::compress::whole(&vec![b'A'; 20 << 20]).unwrap();
    let good = ferrymail::ferry::compress::whole(&letter(1, 5000)).unwrap();
    let mut s = connected(hub.addr).await;
    let mut wire =
        b"EHLO edge.test\r\nMAIL FROM:<a@edge.test> XZSTD\r\nRCPT TO:<b@ours.example>\r\n".to_vec();
    // The bomb in two chunks: the second is read and thrown away.
    let half = bomb.len() / 2;
    wire.extend_from_slice(format!("BDAT {half}\r\n").as_bytes());
    wire.extend_from_slice(&bomb[..half]);
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", bomb.len() - half).as_bytes());
    wire.extend_from_slice(&bomb[half..]);
    // Garbage that is no zstd at all, then a good message: the session stays in step.
    wire.extend_from_slice(
        b"MAIL FROM:<a@edge.test> XZSTD\r\nRCPT TO:<b@ours.example>\r\nBDAT 9 LAST\r\nnot zstd!",
    );
    wire.extend_from_slice(b"MAIL FROM:<a@edge.test> XZSTD\r\nRCPT TO:<b@ours.example>\r\n");
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", good.len()).as_bytes());
    wire.extend_from_slice(&good);
    wire.extend_from_slice(b"QUIT\r\n");
    s.write_all(&wire).await.unwrap();
    let mut replies = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut replies))
        .await
        .expect("the hub answers in time")
        .unwrap();
    let codes: Vec<&str> = replies
        .lines()
        .filter(|l| !l.starts_with("250-"))
        .map(|l| &l[..3.min(l.len())])
        .collect();
    assert_eq!(
        codes,
        [
            "250", "250", "250", "250", "554", "250", "250", "554", "250", "250", "250", "221"
        ],
        "{replies}"
    );
    assert!(
        replies.contains("554 5.6.0 Compressed content expands"),
        "{replies}"
    );
    assert!(replies.contains("XFERRY ZSTD RESUME"));
    assert_eq!(hub.stored().len(), 1, "only the good message");
    assert!(hub.stored()[0].ends_with(&letter(1, 5000)));
    assert_eq!(hub.drafts(), 0, "no draft left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xferry_is_refused_where_it_is_not_offered() {
    let hub = Listener::start(false, "").await;
    let mut s = connected(hub.addr).await;
    s.write_all(b"EHLO edge.test\r\nMAIL FROM:<a@edge.test> XZSTD\r\nQUIT\r\n")
        .await
        .unwrap();
    let mut replies = String::new();
    s.read_to_string(&mut replies).await.unwrap();
    assert!(!replies.contains("XFERRY"), "{replies}");
    assert!(replies.contains("555 5.5.4"), "{replies}");
}

/// Waits (bounded) until what the hub keeps of the cut transfer stops growing: the
/// hub has read what reached it before the cut. Returns its size.
async fn kept(hub: &Listener) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut same) = (None, 0);
    loop {
        let size = hub.partials().iter().map(|(_, n)| *n).max();
        same = if size.is_some() && size == last {
            same + 1
        } else {
            0
        };
        if same == 3 {
            return size.unwrap_or(0);
        }
        assert!(Instant::now() < deadline, "kept {size:?}, still changing");
        last = size;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_transfer_resumes_at_several_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    let content = attachment(7, 3 << 20);
    let file = in_file(dir.path(), "m", &content);
    let len = content.len();
    // Where the link goes down, in bytes from the edge, early, halfway and near the end
    // of what goes on the wire (about the compressed size).
    let wire = ferrymail::ferry::compress::whole(&content).unwrap().len();
    for (k, cut) in [150_000usize, wire / 2, wire - 20_000]
        .into_iter()
        .enumerate()
    {
        let hub = Listener::start(true, "").await;
        let id = format!("0CUT{k}");
        let m = [outgoing(&id, &rcpts, Content::File(&file))];
        let cutting = proxy(hub.addr, Cut::At(cut), None).await;
        let out = send(cutting.addr, true, &m).await;
        assert!(
            !delivered(&out),
            "the cut transfer cannot be delivered: {out:?}"
        );
        assert!(hub.stored().is_empty(), "nothing partial is ever a message");
        let held = kept(&hub).await;
        assert!(held > 0, "cut at {cut}: the hub kept what reached it");
        let whole = proxy(hub.addr, Cut::Never, None).await;
        let out = send(whole.addr, true, &m).await;
        assert!(delivered(&out), "cut at {cut}: {out:?}");
        let resent = whole.sent().len() as u64;
        assert!(
            resent <= len as u64 - held + (32 << 10),
            "cut at {cut}: kept {held}, sent {resent} again of {len}"
        );
        assert!(whole.sent_text().contains(&format!(" XRESUME={}", m[0].id)));
        assert_stored_once(&hub, &[&content]);
        assert!(
            hub.partials().is_empty(),
            "the kept bytes go once committed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_whose_replies_meet_a_reset_still_keeps_what_reached_it() {
    let dir = tempfile::tempdir().unwrap();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    let content = attachment(13, 3 << 20);
    let file = in_file(dir.path(), "m", &content);
    let m = [outgoing("0HARD", &rcpts, Content::File(&file))];
    let hub = Listener::start(true, "").await;
    let cut = 1_500_000;
    let p = proxy(hub.addr, Cut::Hard(cut), None).await;
    assert!(!delivered(&send(p.addr, true, &m).await));
    // Every byte before the cut reached the hub, so it holds what they decode to (but
    // the last zstd block, which the cut left unfinished).
    let held = kept(&hub).await;
    assert!(
        held >= cut as u64 - (128 << 10),
        "kept {held} of {cut} sent"
    );
    let whole = proxy(hub.addr, Cut::Never, None).await;
    assert!(delivered(&send(whole.addr, true, &m).await));
    assert_stored_once(&hub, &[&content]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cuts_in_a_row_cost_little_more_than_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    let content = attachment(11, 4 << 20);
    let file = in_file(dir.path(), "m", &content);
    let m = [outgoing("0THREE", &rcpts, Content::File(&file))];
    let hub = Listener::start(true, "").await;
    let mut total = 0usize;
    let mut held = 0;
    for cut in [1_000_000usize, 1_000_000, 1_000_000] {
        let p = proxy(hub.addr, Cut::At(cut), None).await;
        let out = send(p.addr, true, &m).await;
        assert!(!delivered(&out));
        total += p.sent().len();
        let now = kept(&hub).await;
        assert!(now > held, "each connection adds to what is kept");
        held = now;
    }
    let p = proxy(hub.addr, Cut::Never, None).await;
    assert!(delivered(&send(p.addr, true, &m).await));
    total += p.sent().len();
    assert_stored_once(&hub, &[&content]);
    let ratio = total as f64 / content.len() as f64;
    assert!(
        ratio <= 1.1,
        "sent {total} for {}: {ratio:.3}x",
        content.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_resume_offers_fall_back_to_a_full_send() {
    let dir = tempfile::tempdir().unwrap();
    let rcpts = [Recipient::parse("b@ours.example").unwrap()];
    let content = attachment(5, 1 << 20);
    let file = in_file(dir.path(), "m", &content);
    let m = [outgoing("0HOSTILE", &rcpts, Content::File(&file))];
    let past_the_end: Rewrite = Arc::new(|line: &str| {
        if line.contains("Resume ") {
            let at = line.rfind(" at ").unwrap();
            format!("{} at 99999999999\r\n", &line[..at])
        } else {
            line.to_owned()
        }
    });
    let another_key: Rewrite = Arc::new(|line: &str| {
        if let Some(i) = line.find("Resume ") {
            let key_at = line[i..].find('.').unwrap() + i + 1;
            let mut s = line.to_owned();
            s.replace_range(key_at..key_at + 8, "00000000");
            s.replace(" at 0", " at 4096")
        } else {
            line.to_owned()
        }
    });
    for (name, rewrite) in [("past the end", past_the_end), ("another key", another_key)] {
        let hub = Listener::start(true, "").await;
        let p = proxy(hub.addr, Cut::Never, Some(rewrite)).await;
        let out = send(p.addr, true, &m).await;
        assert!(delivered(&out), "{name}: {out:?}");
        let text = p.sent_text();
        assert!(
            text.contains("\r\nRSET\r\nMAIL FROM:<a@edge.test> SIZE="),
            "{name}: the transaction starts over"
        );
        let second_mail = text.rfind("MAIL FROM").unwrap();
        assert!(
            !text[second_mail..]
                .lines()
                .next()
                .unwrap()
                .contains("XRESUME")
        );
        assert!(p.sent().len() > content.len() * 3 / 4, "{name}: sent whole");
        assert_stored_once(&hub, &[&content]);
    }

    // Kept bytes that are not this content's (a power cut's garbage, a liar's offer):
    // the hash at the end catches them, the attempt is deferred, and the next one is
    // whole.
    let hub = Listener::start(true, "").await;
    let digest = ring::digest::digest(&ring::digest::SHA256, &content);
    let key = ferrymail::ferry::ResumeKey::new("0HOSTILE", digest.as_ref().try_into().unwrap());
    std::fs::create_dir_all(&hub.layout.partial).unwrap();
    std::fs::write(hub.layout.partial.join(key.as_str()), vec![b'x'; 100_000]).unwrap();
    let out = send(hub.addr, true, &m).await;
    assert_eq!(out[0][0].outcome, Outcome::Deferred, "{out:?}");
    assert!(out[0][0].reason.contains("does not match"), "{out:?}");
    assert!(hub.stored().is_empty());
    assert!(hub.partials().is_empty(), "the garbage is dropped");
    assert!(delivered(&send(hub.addr, true, &m).await));
    assert_stored_once(&hub, &[&content]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_compressed_against_a_message_not_kept_is_refused_not_guessed() {
    let hub = Listener::start(true, "").await;
    let z = ferrymail::ferry::compress::whole(&letter(3, 4000)).unwrap();
    let mut s = connected(hub.addr).await;
    let mut wire = b"EHLO edge.test\r\nMAIL FROM:<a@edge.test> XZSTD=0NOSUCHMESSAGE\r\nRCPT TO:<b@ours.example>\r\n".to_vec();
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", z.len()).as_bytes());
    wire.extend_from_slice(&z);
    wire.extend_from_slice(b"MAIL FROM:<a@edge.test> XZSTD=a,b,c,d,e\r\nQUIT\r\n");
    s.write_all(&wire).await.unwrap();
    let mut replies = String::new();
    s.read_to_string(&mut replies).await.unwrap();
    assert!(
        replies.contains("451 4.6.0 XZSTD names a message"),
        "{replies}"
    );
    assert!(
        replies.contains("501 5.5.4"),
        "at most four references: {replies}"
    );
    assert!(hub.stored().is_empty());
    assert_eq!(hub.drafts(), 0);
}
