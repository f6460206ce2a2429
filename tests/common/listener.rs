//! Our own SMTP listener, in process, as the far end of client tests: `hub.test`, where
//! `ours.example` is local and nothing else relays. Its spool is real; `stored` reads
//! back what it committed. Optionally it offers XFERRY (docs/xferry.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferrymail::config::ListenKind;
use ferrymail::ferry::partial::PartialStore;
use ferrymail::server::{ConnectionLimits, ServerContext, SessionConfig, Timeouts};
use ferrymail::spool::envelope::{read_body, read_stored};
use ferrymail::spool::{IndexReader, Layout, RealFs, Spool, SpoolOptions};
use tokio_util::sync::CancellationToken;

pub struct Listener {
    pub addr: SocketAddr,
    pub layout: Layout,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Listener {
    /// Starts it; `ferry` offers XFERRY, `extra` is appended to its configuration.
    pub async fn start(ferry: bool, extra: &str) -> Listener {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "hostname = \"hub.test\"\nspool = \"{}\"\n[accept]\nrelay_networks = []\nlocal_domains = [\"ours.example\"]\n{extra}",
            dir.path().join("spool").display()
        );
        let config = ferrymail::config::parse(&text, &dir.path().join("f.toml")).unwrap();
        let layout = Layout::new(&config.spool);
        let l = layout.clone();
        let (spool, _) = tokio::task::spawn_blocking(move || {
            Spool::open(l, Arc::new(RealFs), SpoolOptions::default()).unwrap()
        })
        .await
        .unwrap();
        let shutdown = CancellationToken::new();
        let ctx = Arc::new(ServerContext {
            session: Arc::new(SessionConfig {
                ferry,
                ..SessionConfig::from_config(&config, ListenKind::Smtp)
            }),
            spool,
            timeouts: Timeouts::default(),
            shutdown: shutdown.clone(),
            tls: None,
            auth: None,
            etrn: None,
            odmr: None,
            stats: Default::default(),
            limits: ConnectionLimits::default(),
            partials: ferry
                .then(|| PartialStore::new(layout.partial.clone(), config.accept.resume_keep.0)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(ferrymail::server::serve(
            listener,
            Arc::new(ferrymail::current::Current::from_arc(ctx)),
        ));
        Listener {
            addr,
            layout,
            shutdown,
            _dir: dir,
        }
    }

    /// The bytes of every committed message, oldest first.
    pub fn stored(&self) -> Vec<Vec<u8>> {
        let Some(reader) = IndexReader::open(&self.layout).unwrap() else {
            return Vec::new();
        };
        reader
            .all_ids()
            .unwrap()
            .iter()
            .map(|id| {
                let path = self.layout.message_path(*id);
                let s = read_stored(&RealFs, &path).unwrap();
                read_body(&RealFs, &path, &s).unwrap()
            })
            .collect()
    }

    /// The partial files kept for resuming, with their sizes.
    pub fn partials(&self) -> Vec<(PathBuf, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.layout.partial) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
            .collect()
    }

    /// Drafts left in `tmp/` (none once every transaction has ended).
    pub fn drafts(&self) -> usize {
        std::fs::read_dir(&self.layout.tmp)
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
