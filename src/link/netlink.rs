//! Linux netlink route and address events as hints that the network changed (an
//! interface came up, an address or a default route appeared). A hint is never taken as
//! "up": it makes the link task probe at once, and the probe decides.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Multicast groups of `<linux/rtnetlink.h>`: links, IPv4/IPv6 addresses and routes.
const GROUPS: u32 = 0x1 /* RTMGRP_LINK */
    | 0x10 /* RTMGRP_IPV4_IFADDR */
    | 0x40 /* RTMGRP_IPV4_ROUTE */
    | 0x100 /* RTMGRP_IPV6_IFADDR */
    | 0x400 /* RTMGRP_IPV6_ROUTE */;

/// Subscribes to route and address changes; each batch of messages sends `()`.
pub fn watch(changed: mpsc::UnboundedSender<()>) -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket we own; OwnedFd closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value before we fill it.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = GROUPS;
    // SAFETY: bind(2) on our socket with a correctly sized sockaddr_nl.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an OwnedFd's descriptor stays open, and the same, until it is dropped with
    // the AsyncFd that owns it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return;
            };
            let mut got = false;
            loop {
                // SAFETY: recv(2) into our buffer, bounded by its length.
                let n = unsafe {
                    libc::recv(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n <= 0 {
                    break;
                }
                got = true;
            }
            ready.clear_ready();
            if got && changed.send(()).is_err() {
                return;
            }
        }
    });
    Ok(())
}
