//! systemd's service notifications (sd_notify(3)), without libsystemd: datagrams of
//! `KEY=value` lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). `READY=1` once the listeners are bound and delivery runs,
//! `STATUS=` with the link gates and the queue, `WATCHDOG=1` when `$WATCHDOG_USEC` asks
//! for it, `STOPPING=1` at shutdown. Without `$NOTIFY_SOCKET` nothing here runs.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::link::LinkMonitor;
use crate::spool::{IndexReader, Spool};

pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, if any.
    pub(crate) fn from_env() -> Option<Notifier> {
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
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `STATUS=` text must stay one line.
fn status_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Tells systemd that the daemon is ready, then how it is doing every half minute (and
/// `WATCHDOG=1` as often as it asks, each after a read of the index went through: a
/// daemon whose disk or runtime is stuck stops answering).
pub async fn report_status(
    notifier: Arc<Notifier>,
    link: Arc<LinkMonitor>,
    spool: Spool,
    shutdown: CancellationToken,
) {
    let watchdog = watchdog_interval();
    let period = watchdog.unwrap_or(STATUS_PERIOD).min(STATUS_PERIOD);
    let mut ready = true;
    loop {
        let layout = spool.layout().clone();
        let counts = tokio::task::spawn_blocking(move || match IndexReader::open(&layout) {
            Ok(Some(reader)) => reader.count_by_state().ok(),
            Ok(None) => Some(Vec::new()),
            Err(_) => None,
        })
        .await
        .ok()
        .flatten();
        let mut message = String::new();
        if ready {
            message.push_str("READY=1\n");
            ready = false;
        }
        message.push_str(&format!("STATUS={}", status_text(&link, counts.as_deref())));
        if watchdog.is_some() && counts.is_some() {
            message.push_str("\nWATCHDOG=1");
        }
        notifier.send(&message);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// How often `STATUS=` is refreshed.
const STATUS_PERIOD: Duration = Duration::from_secs(30);

/// `upstream up; 3 queued, 1 deferred` for `systemctl status`.
fn status_text(
    link: &LinkMonitor,
    counts: Option<&[(crate::spool::RecipientState, i64)]>,
) -> String {
    let gates: Vec<String> = link
        .status()
        .iter()
        .map(|r| format!("{} {}", r.route, r.state.as_str()))
        .collect();
    let queue = match counts {
        Some(counts) => {
            let waiting: Vec<String> = counts
                .iter()
                .filter(|(s, n)| *n > 0 && !s.is_final())
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            if waiting.is_empty() {
                "queue empty".to_owned()
            } else {
                waiting.join(", ")
            }
        }
        None => "queue unreadable".to_owned(),
    };
    status_line(&format!("{}; {queue}", gates.join(", ")))
}
