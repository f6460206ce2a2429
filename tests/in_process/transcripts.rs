//! Golden SMTP dialogues: every `tests/transcripts/*.smtp` file runs against an in-process
//! listener on 127.0.0.1:0 with a fresh spool. The format, one directive per line:
//!
//! ```text
//! # comment
//! ! config TOML-LINE       appended to the configuration (before the dialogue)
//! ! timeout SECONDS        the server's command and data timeout
//! ! session SECONDS        the server's whole-session deadline
//! sleep SECONDS            the client waits
//! > TEXT                   the client sends TEXT and CRLF
//! >> TEXT                  the client sends TEXT as is (escapes: \r \n \0 \t \\)
//! < PREFIX                 the next reply's last line starts with PREFIX (e.g. `250`, `5`)
//! <~ TEXT                  the next reply has a line containing TEXT
//! < closed                 the server closes the connection
//! = queued N               N messages are in the queue
//! = body-contains TEXT     the newest queued message's bytes contain TEXT (escapes)
//! = body-lacks TEXT        ... and do not contain it
//! ```
//! `xN ` before `>`, `>>` or `<` repeats the directive N times, `{n}` counting from 0.
//!
//! `TRANSCRIPT=smuggling cargo test --test in_process transcripts` runs only the transcripts whose
//! file name contains `smuggling`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common;

use common::listener::{context, open_spool, serve};
use ferrymail::server::{ServerContext, SessionConfig, Timeouts};
use ferrymail::spool::envelope::{read_body, read_stored};
use ferrymail::spool::{IndexReader, Layout, RealFs, Spool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('0') => out.push(0),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            other => panic!("bad escape \\{other:?} in {s:?}"),
        }
    }
    out
}

struct Server {
    spool: Spool,
    layout: Layout,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(config_lines: &[String], timeout: Duration, deadline: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "hostname = \"edge.test\"\nspool = \"{}\"\n{}\n",
        dir.path().join("spool").display(),
        config_lines.join("\n")
    );
    let config = ferrymail::config::parse(&text, &dir.path().join("f.toml")).unwrap();
    let layout = Layout::new(&config.spool);
    let spool = open_spool(&layout, Arc::new(RealFs)).await;
    let session = SessionConfig::from_config(&config, ferrymail::config::ListenKind::Smtp);
    let shutdown = CancellationToken::new();
    let (addr, task) = serve(ServerContext {
        timeouts: Timeouts {
            command: timeout,
            data: timeout,
            session: deadline,
            ..Timeouts::default()
        },
        ..context(session, spool.clone(), shutdown.clone())
    })
    .await;
    Server {
        spool,
        layout,
        addr,
        shutdown,
        task,
        _dir: dir,
    }
}

/// Reads one reply (all its lines); `None` when the server closed the connection.
async fn read_reply(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    what: &str,
) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("{what}: no reply within 10 s (so far {lines:?})"))
            .unwrap_or(0);
        if n == 0 {
            return if lines.is_empty() {
                None
            } else {
                panic!("{what}: closed mid-reply {lines:?}")
            };
        }
        assert!(
            line.ends_with("\r\n"),
            "{what}: reply line without CRLF: {line:?}"
        );
        let line = line.trim_end().to_owned();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Some(lines);
        }
    }
}

fn queued_ids(layout: &Layout) -> Vec<ferrymail::spool::QueueId> {
    IndexReader::open(layout)
        .unwrap()
        .map(|r| r.all_ids().unwrap())
        .unwrap_or_default()
}

async fn run_transcript(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut config = Vec::new();
    let mut timeout = Duration::from_secs(30);
    let mut session = Duration::from_secs(120);
    let mut dialogue = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(c) = line.strip_prefix("! config ") {
            config.push(c.to_owned());
        } else if let Some(t) = line.strip_prefix("! timeout ") {
            timeout = Duration::from_secs_f64(t.trim().parse().unwrap());
        } else if let Some(t) = line.strip_prefix("! session ") {
            session = Duration::from_secs_f64(t.trim().parse().unwrap());
        } else {
            let (count, rest) = match line.strip_prefix('x').and_then(|r| r.split_once(' ')) {
                Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => {
                    (n.parse().unwrap(), rest)
                }
                _ => (1usize, line),
            };
            for n in 0..count {
                dialogue.push((no + 1, rest.replace("{n}", &n.to_string())));
            }
        }
    }
    let server = start(&config, timeout, session).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let greeting = read_reply(&mut read, &name).await.expect("a greeting");
    assert!(
        greeting[0].starts_with("220 edge.test"),
        "{name}: greeting {greeting:?}"
    );
    for (no, step) in dialogue {
        let what = format!("{name}:{no}: {step}");
        if let Some(raw) = step.strip_prefix(">> ") {
            let _ = write.write_all(&unescape(raw)).await;
        } else if let Some(cmd) = step.strip_prefix("> ").or((step == ">").then_some("")) {
            let mut bytes = unescape(cmd);
            bytes.extend_from_slice(b"\r\n");
            let _ = write.write_all(&bytes).await;
        } else if let Some(t) = step.strip_prefix("sleep ") {
            tokio::time::sleep(Duration::from_secs_f64(t.trim().parse().unwrap())).await;
        } else if step == "< closed" {
            let reply = read_reply(&mut read, &what).await;
            assert!(
                reply.is_none(),
                "{what}: expected the connection closed, got {reply:?}"
            );
        } else if let Some(want) = step.strip_prefix("<~ ") {
            let reply = read_reply(&mut read, &what)
                .await
                .unwrap_or_else(|| panic!("{what}: connection closed"));
            assert!(
                reply.iter().any(|l| l.contains(want)),
                "{what}: got {reply:?}"
            );
        } else if let Some(want) = step.strip_prefix("< ") {
            let reply = read_reply(&mut read, &what)
                .await
                .unwrap_or_else(|| panic!("{what}: connection closed"));
            assert!(
                reply.last().unwrap().starts_with(want),
                "{what}: got {reply:?}"
            );
        } else if let Some(n) = step.strip_prefix("= queued ") {
            let ids = queued_ids(&server.layout);
            assert_eq!(
                ids.len(),
                n.trim().parse::<usize>().unwrap(),
                "{what}: queue {ids:?}"
            );
        } else if let Some(text) = step
            .strip_prefix("= body-contains ")
            .or(step.strip_prefix("= body-lacks "))
        {
            let ids = queued_ids(&server.layout);
            let newest = ids.last().unwrap_or_else(|| panic!("{what}: queue empty"));
            let file = server.layout.message_path(*newest);
            let stored = read_stored(&RealFs, &file).unwrap();
            let body = read_body(&RealFs, &file, &stored).unwrap();
            let needle = unescape(text);
            let found = body.windows(needle.len()).any(|w| w == needle.as_slice());
            let want = step.starts_with("= body-contains");
            assert_eq!(
                found,
                want,
                "{what}: body was {:?}",
                String::from_utf8_lossy(&body)
            );
        } else {
            panic!("{what}: unknown directive");
        }
    }
    drop(write);
    server.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    server.spool.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "smtp"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "transcripts missing");
    // TRANSCRIPT=NAME runs only those whose file name contains NAME.
    if let Ok(name) = std::env::var("TRANSCRIPT") {
        files.retain(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().contains(&name))
        });
        assert!(!files.is_empty(), "no transcript named like {name:?}");
    }
    let mut handles = Vec::new();
    for file in files {
        handles.push((
            file.clone(),
            tokio::spawn(async move { run_transcript(&file).await }),
        ));
    }
    let mut failed = Vec::new();
    for (file, handle) in handles {
        if let Err(e) = handle.await {
            let msg = e
                .try_into_panic()
                .ok()
                .and_then(|p| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "failed transcripts:\n{}",
        failed.join("\n")
    );
}
