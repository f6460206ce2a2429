//! The CLI side of the control socket: connect, send one request, read one reply.
//! "No daemon" (no socket, or nobody listening) is its own error, so commands can fall
//! back to acting on the spool directly, or exit 69 as README, "Configuration" says.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no ferrymail daemon answers on {0}")]
    NoDaemon(String),
    #[error("control socket {path}: {message}")]
    Protocol { path: String, message: String },
}

/// Sends `request` and waits up to `timeout` for the reply.
pub fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    request_with_files(socket, request, &[], timeout)
}

/// Sends `request`, hands over `files` when the daemon asks for them, and waits up to
/// `timeout` for each reply.
pub(crate) fn request_with_files(
    socket: &Path,
    request: &Request,
    files: &[BorrowedFd<'_>],
    timeout: Duration,
) -> Result<Response, ControlError> {
    let path = socket.display().to_string();
    let stream = UnixStream::connect(socket).map_err(|_| ControlError::NoDaemon(path.clone()))?;
    let fail = |message: String| ControlError::Protocol {
        path: path.clone(),
        message,
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_vec(request).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .map_err(|e| fail(format!("send: {e}")))?;
    let mut replies = BufReader::new(&stream);
    let mut read_reply = || -> Result<Response, ControlError> {
        let mut reply = String::new();
        replies
            .read_line(&mut reply)
            .map_err(|e| fail(format!("no reply: {e}")))?;
        if reply.is_empty() {
            return Err(fail("the daemon closed the connection".into()));
        }
        serde_json::from_str(&reply).map_err(|e| fail(format!("bad reply: {e}")))
    };
    match read_reply()? {
        Response::SendFiles { count } if count == files.len() => {
            super::files::send(&stream, files).map_err(|e| fail(format!("sending files: {e}")))?;
            read_reply()
        }
        Response::SendFiles { count } => Err(fail(format!(
            "the daemon asks for {count} files; this request has {}",
            files.len()
        ))),
        other => Ok(other),
    }
}
