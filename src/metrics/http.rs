//! The metrics endpoint: a tiny HTTP/1.1 server, no framework. `GET /metrics` answers
//! with the exposition; anything else with 404 (405 for another method). One request
//! per connection, the request head bounded (8 KiB, 5 s), a few connections at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, Metrics};
use crate::link::LinkMonitor;
use crate::server::ServerStats;
use crate::spool::Spool;

const MAX_HEAD: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 8;

/// What a scrape reads.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub spool: Spool,
    pub link: Arc<LinkMonitor>,
    pub server: Arc<ServerStats>,
}

pub async fn serve(listener: TcpListener, sources: Arc<Sources>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: the scraper retries
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _ = answer(stream, &sources).await;
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    });
    if read.await.is_err() {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => match sources
            .metrics
            .render(&sources.spool, &sources.link, &sources.server)
            .await
        {
            Ok(text) => ("200 OK", CONTENT_TYPE, text),
            Err(e) => {
                tracing::error!(error = %e, "metrics: cannot read the queue");
                (
                    "500 Internal Server Error",
                    "text/plain",
                    "cannot read the queue\n".into(),
                )
            }
        },
        ("GET", _) => ("404 Not Found", "text/plain", "see /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
