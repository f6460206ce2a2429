//! Flushes that arrive as signals and files: SIGUSR1, and the trigger file
//! (`link.trigger_file`, created, touched or written by the contrib/ hooks when a link
//! comes up). Each is a flush of the whole queue, like `ferrymail flush`. A trigger file
//! that says `down` (the hooks write it when a link goes away) is no flush: the gates
//! probe at once, and close without waiting for a delivery to fail.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::link::{LinkMonitor, trigger};
use crate::queue::handle::FlushTarget;
use crate::queue::handle::QueueHandle;

/// How often the trigger file's modification time is looked at, besides notify.
const POLL: Duration = Duration::from_secs(5);

pub async fn run(
    queue: QueueHandle,
    link: Arc<LinkMonitor>,
    trigger_file: Option<PathBuf>,
    shutdown: CancellationToken,
) {
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGUSR1");
            None
        }
    };
    let (changed, mut changes) = mpsc::unbounded_channel();
    let _watcher = trigger_file
        .as_ref()
        .and_then(|f| trigger::watch(f, changed));
    let mut poll = trigger_file.as_deref().map(trigger::Poll::new);
    let mut ticker = tokio::time::interval(POLL);
    loop {
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(_) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => "SIGUSR1",
            Some(()) = changes.recv() => {
                // One touch makes several events: take them all as one flush.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while changes.try_recv().is_ok() {}
                if let Some(p) = poll.as_mut() {
                    p.changed();
                }
                "the trigger file"
            }
            _ = ticker.tick() => {
                if !poll.as_mut().is_some_and(trigger::Poll::changed) {
                    continue;
                }
                "the trigger file"
            }
        };
        if why == "the trigger file" && says_down(trigger_file.as_deref()) {
            link.hint("the trigger file says down");
            continue;
        }
        queue.flush_soon(FlushTarget::All, why);
    }
}

/// The trigger file holds `down` (a hook saw the link go).
fn says_down(file: Option<&std::path::Path>) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    // Never follow a link to another file, nor wait on a FIFO put in its place.
    let Some(Ok((mut f, _))) = file.map(crate::spool::fs::open_regular) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    head[..n].trim_ascii() == b"down"
}
