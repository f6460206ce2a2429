//! Open files handed over the control socket (SCM_RIGHTS, unix(7)): a bundle export
//! writes into, and an import reads from, a file the CLI opened (or its stdin and
//! stdout), whatever user the daemon runs as and whoever owns the file. The daemon asks
//! for them after checking the request (`Response::SendFiles`); the CLI answers with one
//! byte carrying exactly that many descriptors.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Most descriptors one request hands over.
pub const MAX_FILES: usize = 2;

/// Sends `files` over `socket` (the CLI's side).
pub fn send(socket: impl AsFd, files: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FILES))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(files)) {
        return Err(io::Error::other("too many files for one request"));
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"F")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receives exactly `n` descriptors from `socket` (the daemon's side).
pub async fn receive(socket: &tokio::net::UnixStream, n: usize) -> io::Result<Vec<OwnedFd>> {
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            receive_now(socket.as_fd(), n)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn receive_now(socket: BorrowedFd<'_>, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FILES))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut files = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            files.extend(fds);
        }
    }
    if files.len() != n {
        return Err(io::Error::other(format!(
            "{} files sent where {n} were asked for",
            files.len()
        )));
    }
    Ok(files)
}
