//! The accept loop of one `[[listen]]` entry: a connection cap, of which the last
//! `reserved` slots are kept for clients in `relay_networks`, and a per-client cap that
//! those clients are exempt from, as Postfix exempts mynetworks (over a cap: `421` and
//! close); a backoff when the process runs out of file descriptors; a clean stop on
//! shutdown (connections answer 421 at their next wait). Each listener has its own
//! slots, so a flood on port 25 leaves submission alone. The caps are read from the
//! current context at each accept: a reload changes them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::conn::{ServerContext, serve_connection};
use super::stream::Stream;
use crate::current::Current;
use crate::smtp::reply;

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
    /// Of `max_connections`, kept for clients in `relay_networks`.
    pub reserved: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 256,
            max_per_client: 10,
            reserved: 32,
        }
    }
}

/// Open connections, in all and by client address; a slot is released when dropped.
#[derive(Clone, Default)]
struct Slots(Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>);

struct Slot(Slots, IpAddr);

impl Slots {
    /// A slot for `ip` under `limits`; a `trusted` client may use the reserved slots and
    /// is not held to the per-client cap.
    fn take(&self, ip: IpAddr, trusted: bool, limits: &ConnectionLimits) -> Option<Slot> {
        let mut open = self.0.lock().expect("not poisoned");
        let (total, by_client) = &mut *open;
        let cap = if trusted {
            limits.max_connections
        } else {
            limits.max_connections.saturating_sub(limits.reserved)
        };
        let mine = by_client.entry(ip).or_insert(0);
        if *total >= cap || (!trusted && *mine >= limits.max_per_client) {
            if *mine == 0 {
                by_client.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().expect("not poisoned");
        let (total, by_client) = &mut *open;
        *total -= 1;
        if let Some(n) = by_client.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                by_client.remove(&self.1);
            }
        }
    }
}

/// Accepts until shutdown, then waits for open connections to finish. Each connection
/// is served with the context current when it was accepted (a reload replaces it).
pub async fn serve(listener: TcpListener, current: Arc<Current<ServerContext>>) {
    let shutdown = current.get().shutdown.clone();
    let slots = Slots::default();
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
        let Some(slot) = slots.take(peer.ip(), trusted, &ctx.limits) else {
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
            drop(slot);
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
