//! Prometheus metrics (`[metrics] listen`; README "Metrics" lists them all). Counters
//! are kept as things happen (lanes count recipients and bytes per route, the listeners
//! count connections, the spool counts what it accepted); the queue's gauges and the
//! link gates are read when scraped, from a read-only look at the index and the gates,
//! so a scrape costs one index read and nothing is kept twice.

pub mod http;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::link::LinkMonitor;
use crate::link::gate::LinkState;
use crate::server::ServerStats;
use crate::spool::reader::{ReadError, Summary};
use crate::spool::{IndexReader, RecipientState, Spool, now_unix};

type Labels = Vec<(&'static str, String)>;

/// What became of recipients, for `ferrymail_recipients_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    Delivered,
    Deferred,
    Bounced,
    Expired,
    /// Kept back: our link was down, or nothing could be sent.
    NotAttempted,
}

impl Counted {
    fn as_str(self) -> &'static str {
        match self {
            Counted::Delivered => "delivered",
            Counted::Deferred => "deferred",
            Counted::Bounced => "bounced",
            Counted::Expired => "expired",
            Counted::NotAttempted => "not_attempted",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    recipients: Family<Labels, Counter>,
    bytes_sent: Family<Labels, Counter>,
    connections: Family<Labels, Counter>,
    double_bounces: Counter,
    odmr_turns: Family<Labels, Counter>,
    odmr_delivered: Family<Labels, Counter>,
    odmr_last_turn: Family<Labels, Gauge>,
    sessions_open: Gauge,
    accepted: Counter,
    accepted_seen: AtomicU64,
    connections_seen: [AtomicU64; 2],
    queue_recipients: Family<Labels, Gauge>,
    queue_by_route: Family<Labels, Gauge>,
    queue_messages: Gauge,
    queue_kept: Gauge,
    oldest_age: Gauge,
    link_state: Family<Labels, Gauge>,
    gate_open: Family<Labels, Gauge>,
    last_flush_at: Gauge,
    last_flush_drained: Gauge,
    /// One scrape at a time refreshes and encodes.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ferrymail");
        let recipients = Family::default();
        registry.register(
            "recipients",
            "Recipients settled by delivery, by route and outcome",
            recipients.clone(),
        );
        let bytes_sent = Family::default();
        registry.register(
            "sent_bytes",
            "Message bytes delivered, by route",
            bytes_sent.clone(),
        );
        let connections = Family::default();
        registry.register(
            "smtp_connections",
            "SMTP connections to the listeners, accepted or refused (over the caps)",
            connections.clone(),
        );
        let odmr_turns = Family::default();
        registry.register(
            "odmr_turns",
            "ODMR turns (RFC 2645) that took a held domain, by domain",
            odmr_turns.clone(),
        );
        let odmr_delivered = Family::default();
        registry.register(
            "odmr_delivered_recipients",
            "Recipients delivered to their station by ODMR turns, by domain",
            odmr_delivered.clone(),
        );
        let odmr_last_turn = Family::default();
        registry.register(
            "odmr_last_turn_timestamp_seconds",
            "When a domain's last ODMR turn started (Unix seconds), by domain",
            odmr_last_turn.clone(),
        );
        let double_bounces = Counter::default();
        registry.register(
            "double_bounces",
            "Failure notices that failed in turn: sent to the admin address, or kept in the queue",
            double_bounces.clone(),
        );
        let sessions_open = Gauge::default();
        registry.register(
            "smtp_sessions",
            "SMTP sessions open now",
            sessions_open.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "messages_accepted",
            "Messages accepted into the spool (SMTP, sendmail, notices)",
            accepted.clone(),
        );
        let queue_recipients = Family::default();
        registry.register(
            "queue_recipients",
            "Recipients in the queue, by state",
            queue_recipients.clone(),
        );
        let queue_by_route = Family::default();
        registry.register(
            "queue_route_recipients",
            "Recipients waiting (queued, deferred, in flight or held), by route",
            queue_by_route.clone(),
        );
        let queue_kept = Gauge::default();
        registry.register(
            "queue_kept_messages",
            "Failed notices kept in the queue for the operator (double bounces without an admin)",
            queue_kept.clone(),
        );
        let queue_messages = Gauge::default();
        registry.register(
            "queue_messages",
            "Messages in the queue",
            queue_messages.clone(),
        );
        let oldest_age = Gauge::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest message in the queue",
            oldest_age.clone(),
        );
        let link_state = Family::default();
        registry.register(
            "link_state",
            "Each route's link state: 1 for the current one of up, down, unknown",
            link_state.clone(),
        );
        let gate_open = Family::default();
        registry.register(
            "link_gate_open",
            "Whether each route may deliver now",
            gate_open.clone(),
        );
        let last_flush_at = Gauge::default();
        registry.register(
            "last_flush_timestamp_seconds",
            "When the last flush started (Unix time; 0: none yet)",
            last_flush_at.clone(),
        );
        let last_flush_drained = Gauge::default();
        registry.register(
            "last_flush_drained",
            "1 if the last flush delivered everything due, 0 if it stopped or still runs",
            last_flush_drained.clone(),
        );
        Metrics {
            registry,
            recipients,
            bytes_sent,
            connections,
            double_bounces,
            odmr_turns,
            odmr_delivered,
            odmr_last_turn,
            sessions_open,
            accepted,
            accepted_seen: AtomicU64::new(0),
            connections_seen: [AtomicU64::new(0), AtomicU64::new(0)],
            queue_recipients,
            queue_by_route,
            queue_messages,
            queue_kept,
            oldest_age,
            link_state,
            gate_open,
            last_flush_at,
            last_flush_drained,
            scrape: Mutex::new(()),
        }
    }

    /// `n` recipients of `route` came to `outcome`.
    pub fn count(&self, route: &str, outcome: Counted, n: u64) {
        if n > 0 {
            self.recipients
                .get_or_create(&vec![
                    ("route", route.to_owned()),
                    ("outcome", outcome.as_str().to_owned()),
                ])
                .inc_by(n);
        }
    }

    pub fn sent(&self, route: &str, bytes: u64) {
        if bytes > 0 {
            self.bytes_sent
                .get_or_create(&vec![("route", route.to_owned())])
                .inc_by(bytes);
        }
    }

    /// An ODMR turn took `domain` at `at` (Unix seconds).
    pub(crate) fn odmr_turn(&self, domain: &str, at: i64) {
        let labels = vec![("domain", domain.to_owned())];
        self.odmr_turns.get_or_create(&labels).inc();
        self.odmr_last_turn.get_or_create(&labels).set(at);
    }

    /// An ODMR turn delivered `n` recipients of `domain`.
    pub(crate) fn odmr_delivered(&self, domain: &str, n: u64) {
        if n > 0 {
            self.odmr_delivered
                .get_or_create(&vec![("domain", domain.to_owned())])
                .inc_by(n);
        }
    }

    /// A failure notice failed in turn.
    pub(crate) fn double_bounce(&self) {
        self.double_bounces.inc();
    }

    /// The exposition, after reading the queue, the gates and the totals kept elsewhere.
    pub async fn render(
        self: &Arc<Self>,
        spool: &Spool,
        link: &LinkMonitor,
        server: &ServerStats,
    ) -> Result<String, String> {
        let layout = spool.layout().clone();
        let queue = tokio::task::spawn_blocking(move || read_queue(&layout))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let _one = self.scrape.lock().expect("not poisoned");
        self.catch_up(&self.accepted_seen, &self.accepted, spool.accepted());
        for (i, (kind, total)) in [("accepted", &server.accepted), ("refused", &server.refused)]
            .into_iter()
            .enumerate()
        {
            let counter = self
                .connections
                .get_or_create(&vec![("result", kind.to_owned())])
                .clone();
            self.catch_up(
                &self.connections_seen[i],
                &counter,
                total.load(Ordering::Relaxed),
            );
        }
        self.sessions_open.set(load(&server.open));
        for state in RecipientState::ALL {
            let n = queue
                .by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.queue_recipients
                .get_or_create(&vec![("state", state.as_str().to_owned())])
                .set(n);
        }
        self.queue_by_route.clear();
        for (route, n) in &queue.by_route {
            self.queue_by_route
                .get_or_create(&vec![("route", route.clone())])
                .set(*n);
        }
        self.queue_messages.set(queue.messages);
        self.queue_kept.set(queue.kept);
        self.oldest_age
            .set(queue.oldest_at.map_or(0, |at| (now_unix() - at).max(0)));
        for r in link.status() {
            for state in [LinkState::Up, LinkState::Down, LinkState::Unknown] {
                self.link_state
                    .get_or_create(&vec![
                        ("route", r.route.clone()),
                        ("state", state.as_str().to_owned()),
                    ])
                    .set(i64::from(r.state == state));
            }
            self.gate_open
                .get_or_create(&vec![("route", r.route.clone())])
                .set(i64::from(r.open));
        }
        let flush = link.last_flush();
        self.last_flush_at.set(flush.as_ref().map_or(0, |f| f.at));
        self.last_flush_drained
            .set(i64::from(flush.is_some_and(|f| f.result == "drained")));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Brings `counter` up to `total`, a count kept elsewhere.
    fn catch_up(&self, seen: &AtomicU64, counter: &Counter, total: u64) {
        let before = seen.swap(total, Ordering::Relaxed);
        counter.inc_by(total.saturating_sub(before));
    }
}

fn load(n: &AtomicI64) -> i64 {
    n.load(Ordering::Relaxed)
}

pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The queue, counted, from a read-only view of the index (empty without one).
fn read_queue(layout: &crate::spool::Layout) -> Result<Summary, ReadError> {
    match IndexReader::open(layout)? {
        Some(reader) => reader.summary(),
        None => Ok(Summary::default()),
    }
}
