//! Our own SMTP listener, in process, as the far end of client tests: `hub.test`, where
//! `ours.example` is local and nothing else relays. Its spool is real; `stored` reads
//! back what it committed. As `Options` asks, it offers XFERRY (docs/xferry.md), or
//! STARTTLS with a fresh self-signed certificate and AUTH for given users.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferrymail::config::ListenKind;
use ferrymail::ferry::partial::PartialStore;
use ferrymail::server::auth::{Users, hash_password};
use ferrymail::server::{
    AuthContext, ConnectionLimits, ServerContext, ServerTls, SessionConfig, Timeouts,
};
use ferrymail::spool::envelope::{read_body, read_stored};
use ferrymail::spool::{Fs, IndexReader, Layout, RealFs, Spool, SpoolOptions};
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

pub struct Listener {
    pub addr: SocketAddr,
    pub layout: Layout,
    /// The certificate it presents, where it offers STARTTLS.
    pub cert: Option<CertificateDer<'static>>,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

/// How the listener differs from plain `hub.test`.
#[derive(Default)]
pub struct Options<'a> {
    /// Offers XFERRY.
    pub ferry: bool,
    /// Appended to the configuration, inside `[accept]` unless it opens another table.
    pub extra: &'a str,
    /// Offers STARTTLS, and after it AUTH for these users and passwords.
    pub tls_users: Option<&'a [(&'a str, &'a str)]>,
}

impl Listener {
    /// Starts it; `ferry` offers XFERRY, `extra` is appended to its configuration.
    pub async fn start(ferry: bool, extra: &str) -> Listener {
        Listener::start_with(Options {
            ferry,
            extra,
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options<'_>) -> Listener {
        let Options {
            ferry,
            extra,
            tls_users,
        } = options;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "hostname = \"hub.test\"\nspool = \"{}\"\n[accept]\nrelay_networks = []\nlocal_domains = [\"ours.example\"]\n{extra}",
            dir.path().join("spool").display()
        );
        let config = ferrymail::config::parse(&text, &dir.path().join("f.toml")).unwrap();
        let layout = Layout::new(&config.spool);
        let spool = open_spool(&layout, Arc::new(RealFs)).await;
        let (tls, auth, cert) = match tls_users {
            Some(users) => {
                let (tls, auth, cert) = tls_and_auth(dir.path(), users);
                (Some(tls), Some(auth), Some(cert))
            }
            None => (None, None, None),
        };
        let shutdown = CancellationToken::new();
        let session = SessionConfig {
            ferry,
            tls_available: tls.is_some(),
            auth_available: auth.is_some(),
            ..SessionConfig::from_config(&config, ListenKind::Smtp)
        };
        let partials =
            ferry.then(|| PartialStore::new(layout.partial.clone(), config.accept.resume_keep.0));
        let (addr, _) = serve(ServerContext {
            tls,
            auth,
            partials,
            ..context(session, spool, shutdown.clone())
        })
        .await;
        Listener {
            addr,
            layout,
            cert,
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

/// Opens the spool at `layout` on `fs`, on a blocking thread as the daemon does.
pub async fn open_spool(layout: &Layout, fs: Arc<dyn Fs>) -> Spool {
    let layout = layout.clone();
    tokio::task::spawn_blocking(move || Spool::open(layout, fs, SpoolOptions::default()))
        .await
        .unwrap()
        .unwrap()
        .0
}

/// A listener's context with only `session`, `spool` and `shutdown` given: no TLS, AUTH,
/// ETRN, ODMR or resuming; default timeouts and limits. Tests set what they need over it.
pub fn context(session: SessionConfig, spool: Spool, shutdown: CancellationToken) -> ServerContext {
    ServerContext {
        session: Arc::new(session),
        spool,
        timeouts: Timeouts::default(),
        shutdown,
        tls: None,
        auth: None,
        etrn: None,
        odmr: None,
        partials: None,
        stats: Default::default(),
        limits: ConnectionLimits::default(),
    }
}

/// Serves `ctx` on a fresh loopback port until its shutdown: the address, and the
/// accept loop's task.
pub async fn serve(ctx: ServerContext) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(ferrymail::server::serve(
        listener,
        Arc::new(ferrymail::current::Current::from_arc(Arc::new(ctx))),
    ));
    (addr, task)
}

/// A self-signed certificate for `hub.test` and a password file for `users`, in `dir`.
fn tls_and_auth(
    dir: &std::path::Path,
    users: &[(&str, &str)],
) -> (Arc<ServerTls>, Arc<AuthContext>, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["hub.test".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let tls = ServerTls::load(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let lines: String = users
        .iter()
        .map(|(user, password)| format!("{user}:{}\n", hash_password(password).unwrap()))
        .collect();
    std::fs::write(dir.join("users"), lines).unwrap();
    let users = Users::load(&dir.join("users")).unwrap();
    (
        Arc::new(tls),
        Arc::new(AuthContext::new(users)),
        ck.cert.der().clone(),
    )
}

/// The sender of the test messages a client sends to the listener.
pub fn edge_sender() -> &'static ferrymail::smtp::ReversePath {
    static SENDER: std::sync::LazyLock<ferrymail::smtp::ReversePath> =
        std::sync::LazyLock::new(|| ferrymail::smtp::ReversePath::parse("a@edge.test").unwrap());
    &SENDER
}
