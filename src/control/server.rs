//! The daemon side of the control socket: accepts connections until shut down, reads
//! bounded request lines, checks the peer's uid for privileged requests and every
//! field's syntax, and answers with whatever the `Handler` returns. The socket is open
//! to every local user, so it is bounded like a network listener: at most
//! `MAX_CONNECTIONS` at once and `MAX_PER_UID` from one user (more are told so and
//! closed), `IDLE` to send each request, a request line of `MAX_REQUEST_LINE` from a
//! privileged peer and `MAX_USER_REQUEST_LINE` from anyone else.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{MAX_REQUEST_LINE, Request, Response};
use crate::exit;

/// Control connections at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Control connections at once from one uid.
pub const MAX_PER_UID: usize = 8;
/// How long a connection may take to send its next request.
pub const IDLE: Duration = Duration::from_secs(30);
/// Longest request line from a peer that may not change the queue (a flush or a status
/// asks for a few hundred bytes at most).
pub const MAX_USER_REQUEST_LINE: usize = 4096;

/// Open connections by peer uid (`u32::MAX`: unknown).
#[derive(Clone, Default)]
struct Open(Arc<Mutex<HashMap<u32, usize>>>);

struct Slot(Open, u32);

impl Open {
    fn take(&self, uid: u32) -> Option<Slot> {
        let mut map = self.0.lock().expect("not poisoned");
        let total: usize = map.values().sum();
        let mine = map.entry(uid).or_insert(0);
        if total >= MAX_CONNECTIONS || *mine >= MAX_PER_UID {
            return None;
        }
        *mine += 1;
        Some(Slot(self.clone(), uid))
    }
}

impl Drop for Slot {
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

pub trait Handler: Send + Sync + 'static {
    /// Answers `request`; `files` are the open files it handed over (`Request::files`).
    fn handle(
        &self,
        request: Request,
        files: Vec<std::os::fd::OwnedFd>,
    ) -> impl Future<Output = Response> + Send;
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
    let open = Open::default();
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
        let uid = stream.peer_cred().ok().map_or(u32::MAX, |c| c.uid());
        let Some(slot) = open.take(uid) else {
            tracing::warn!(uid, "control socket: too many connections; refused");
            tokio::spawn(refuse(stream));
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connection(stream, handler) => {}
            }
            drop(slot);
        });
    }
}

/// Over the caps: one error line, then close.
async fn refuse(mut stream: UnixStream) {
    let mut out = serde_json::to_vec(&Response::Error {
        message: "the daemon has too many control connections; try again".into(),
        code: exit::TEMPFAIL,
    })
    .expect("responses serialise");
    out.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
}

async fn connection<H: Handler>(stream: UnixStream, handler: Arc<H>) {
    let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
    let limit = if is_privileged(peer_uid) {
        MAX_REQUEST_LINE
    } else {
        MAX_USER_REQUEST_LINE
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(4096, read.take(u64::MAX));
    loop {
        let mut line = Vec::new();
        reader.get_mut().set_limit(limit as u64 + 1);
        match tokio::time::timeout(IDLE, reader.read_until(b'\n', &mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let response = if line.last() != Some(&b'\n') {
            Response::Error {
                message: format!("request line longer than {limit} bytes"),
                code: exit::DATAERR,
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                    code: exit::USAGE,
                },
                Ok(req) if let Err(why) = req.check() => Response::Error {
                    message: format!("bad request: {why}"),
                    code: exit::USAGE,
                },
                Ok(req) if req.is_privileged() && !is_privileged(peer_uid) => Response::Error {
                    message:
                        "permission denied: changing the queue needs root or the daemon's user"
                            .into(),
                    code: exit::NOPERM,
                },
                Ok(req) if req.files() > 0 => {
                    let ask = Response::SendFiles { count: req.files() };
                    if send(&mut write, &ask).await.is_err() {
                        return;
                    }
                    let socket: &UnixStream = reader.get_ref().get_ref().as_ref();
                    match tokio::time::timeout(IDLE, super::files::receive(socket, req.files()))
                        .await
                    {
                        Ok(Ok(files)) => handler.handle(req, files).await,
                        Ok(Err(e)) => Response::Error {
                            message: format!("no files received: {e}"),
                            code: exit::USAGE,
                        },
                        Err(_) => return,
                    }
                }
                Ok(req) => handler.handle(req, Vec::new()).await,
            }
        };
        if send(&mut write, &response).await.is_err() {
            return;
        }
        if line.last() != Some(&b'\n') {
            return;
        }
    }
}

/// Writes one reply line, within `IDLE`.
async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, response: &Response) -> Result<(), ()> {
    let mut out = serde_json::to_vec(response).expect("responses serialise");
    out.push(b'\n');
    match tokio::time::timeout(IDLE, write.write_all(&out)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

fn is_privileged(peer_uid: Option<u32>) -> bool {
    let own = rustix::process::geteuid().as_raw();
    peer_uid.is_some_and(|uid| uid == 0 || uid == own)
}
