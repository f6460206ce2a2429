//! The accept loop of one `[[listen]]` entry: a global connection cap and a per-client
//! cap (over either: `421` and close; clients in `relay_networks` are exempt from the
//! per-client cap, as Postfix exempts mynetworks), a backoff when the process runs out of
//! file descriptors, and a clean stop on shutdown (connections answer 421 at their next
//! wait).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::conn::{ServerContext, serve_connection};
use super::stream::Stream;
use crate::current::Current;
use crate::smtp::reply;

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 256,
            max_per_client: 50,
        }
    }
}

/// Counts connections per client address; a slot is released when dropped.
#[derive(Clone, Default)]
struct PerClient(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct ClientSlot(PerClient, IpAddr);

impl PerClient {
    fn take(&self, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().expect("not poisoned");
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().expect("not poisoned");
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Accepts until shutdown, then waits for open connections to finish. Each connection
/// is served with the context current when it was accepted (a reload replaces it).
pub async fn serve(
    listener: TcpListener,
    current: Arc<Current<ServerContext>>,
    limits: ConnectionLimits,
) {
    let shutdown = current.get().shutdown.clone();
    let global = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = PerClient::default();
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE/ENFILE and friends: wait for descriptors to free up.
                    tracing::warn!(error = %e, "accept failed; backing off {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(10);
        let _ = stream.set_nodelay(true);
        let ctx = current.get();
        let trusted = ctx.session.policy.may_relay(peer.ip(), false);
        let slot = if trusted {
            Some(None)
        } else {
            per_client.take(peer.ip(), limits.max_per_client).map(Some)
        };
        let (Ok(permit), Some(slot)) = (global.clone().try_acquire_owned(), slot) else {
            ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(refuse(stream, peer));
            continue;
        };
        ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
        tracker.spawn(async move {
            ctx.stats.open.fetch_add(1, Ordering::Relaxed);
            if let Some(stream) = prepare(stream, &ctx).await {
                serve_connection(stream, peer, ctx.clone()).await;
            }
            ctx.stats.open.fetch_sub(1, Ordering::Relaxed);
            drop((permit, slot));
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Before the banner: an early talker is refused (RFC 5321 §4.3.1: the client waits for
/// the greeting); on an smtps listener the TLS handshake comes first (RFC 8314).
async fn prepare(tcp: TcpStream, ctx: &ServerContext) -> Option<Stream> {
    if ctx.session.kind != crate::config::ListenKind::Smtps {
        if talked_first(&tcp, ctx.timeouts.greet_pause).await {
            tracing::warn!(peer = ?tcp.peer_addr().ok(), "client talked before the greeting");
            refuse_early_talker(tcp).await;
            return None;
        }
        return Some(Stream::Plain(tcp));
    }
    let mut stream = Stream::Plain(tcp);
    let acceptor = ctx.tls.as_ref()?.acceptor();
    match tokio::time::timeout(ctx.timeouts.command, stream.upgrade(&acceptor)).await {
        Ok(Ok(())) => Some(stream),
        _ => None,
    }
}

/// 554, then a half-close and a short drain: closing with the client's bytes unread
/// would send a reset that can destroy the reply before it is read.
async fn refuse_early_talker(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tcp.write_all(&reply::SYNC_ERROR.to_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Input already waiting after `pause`, looked at without consuming it.
async fn talked_first(tcp: &TcpStream, pause: Duration) -> bool {
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    let mut byte = [0u8; 1];
    // A zero timeout polls the peek once: ready only if bytes are there now.
    matches!(tokio::time::timeout(Duration::ZERO, tcp.peek(&mut byte)).await, Ok(Ok(n)) if n > 0)
}

async fn refuse(mut stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(peer = %peer, "connection refused: too many connections");
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(&reply::TOO_BUSY.to_bytes()),
    )
    .await;
}
