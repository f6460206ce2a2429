//! The daemon side of the control socket: accepts connections until shut down, reads
//! bounded request lines, checks the peer's uid for privileged requests, and answers
//! with whatever the `Handler` returns.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{MAX_REQUEST_LINE, Request, Response};
use crate::exit;

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;
}

/// Binds the socket, replacing a stale one (the caller holds the spool lock, so no
/// other daemon can be using it). Mode 0666: access control is per request.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

pub async fn serve<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connection(stream, handler) => {}
            }
        });
    }
}

async fn connection<H: Handler>(stream: UnixStream, handler: Arc<H>) {
    let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(u64::MAX));
    loop {
        let mut line = Vec::new();
        reader.get_mut().set_limit(MAX_REQUEST_LINE as u64 + 1);
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = if line.last() != Some(&b'\n') {
            Response::Error {
                message: "request line too long".into(),
                code: exit::DATAERR,
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                    code: exit::USAGE,
                },
                Ok(req) if req.is_privileged() && !is_privileged(peer_uid) => Response::Error {
                    message:
                        "permission denied: changing the queue needs root or the daemon's user"
                            .into(),
                    code: exit::NOPERM,
                },
                Ok(req) => handler.handle(req).await,
            }
        };
        let mut out = serde_json::to_vec(&response).expect("responses serialise");
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
        if line.last() != Some(&b'\n') {
            return;
        }
    }
}

fn is_privileged(peer_uid: Option<u32>) -> bool {
    let own = rustix::process::geteuid().as_raw();
    peer_uid.is_some_and(|uid| uid == 0 || uid == own)
}
