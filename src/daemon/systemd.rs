//! systemd's service notifications (sd_notify(3)), without libsystemd: datagrams of
//! `KEY=value` lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). `READY=1` once the listeners are bound and delivery runs,
//! `STATUS=` with the link gates and the queue, `WATCHDOG=1` when `$WATCHDOG_USEC` asks
//! for it, `STOPPING=1` at shutdown. Without `$NOTIFY_SOCKET` everything here is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, if any.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy();
        let to = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes()).ok()?
            }
            None => SocketAddr::from_pathname(name.as_ref()).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, to })
    }

    /// Sends `state` (newline-separated `KEY=value`); failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.to) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

/// How often systemd wants `WATCHDOG=1` (half its `WatchdogSec=`), when it does and the
/// request is for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `STATUS=` text must stay one line.
pub fn status_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
