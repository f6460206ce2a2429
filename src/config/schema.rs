//! The configuration schema of README, "Configuration" as serde structs, with the built-in defaults.
//! Unknown keys are rejected everywhere (`deny_unknown_fields`): a typo is an error,
//! never a silently ignored setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::net::IpNet;
use super::units::{ByteSize, HumanDuration};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Our name in `Received:`, EHLO and generated addresses; default: the system hostname.
    pub hostname: String,
    /// The spool directory; default: per-user state dir, or /var/spool/ferrymail as root.
    pub spool: PathBuf,
    /// Where mail for local names without an alias goes, and notices nobody else can
    /// receive: a failure notice that bounces in turn (a double bounce). Without it,
    /// such mail stays in the queue for the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The names that are this host, besides `hostname` and `localhost`.
    pub local: Local,
    /// Local name to one or more targets (addresses, or other local names).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, AliasTargets>,
    pub listen: Vec<Listen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    pub accept: Accept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    pub route: Vec<Route>,
    pub dns: Dns,
    pub link: Link,
    pub retry: Retry,
    pub etrn: Etrn,
    /// Prometheus metrics over HTTP; absent: none served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// DKIM signing keys (repeatable; two for one domain sign twice).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dkim: Vec<Dkim>,
    /// Stations that may collect their held mail over an `odmr` listener (repeatable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub odmr_user: Vec<OdmrUser>,
    /// This station collects its mail from a hub over ODMR (RFC 2645).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odmr: Option<Odmr>,
    /// Mail carried without a network, in bundle files (`ferrymail bundle`).
    pub bundle: Bundle,
    /// The nodes this one exchanges bundles with (repeatable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bundle_peer: Vec<BundlePeer>,
}

/// This node's side of bundles.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bundle {
    /// This node's name in the bundles and receipts it writes; default: `hostname`.
    pub node: String,
    /// Bundled mail with no receipt after this long goes back to the queue, to go in
    /// the next bundle (or over SMTP, for an SMTP route).
    pub resend_after: HumanDuration,
    /// Bundles older than this are refused as replays (at most 90 days: how long an
    /// importer remembers what it took).
    pub max_age: HumanDuration,
}

impl Default for Bundle {
    fn default() -> Self {
        Bundle {
            node: String::new(),
            resend_after: secs(3 * 86400),
            max_age: secs(30 * 86400),
        }
    }
}

/// A node this one exchanges bundles with: the key the two share, and the routes whose
/// mail is exported for it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePeer {
    /// Its `bundle.node`.
    pub node: String,
    /// The shared key: one line of at least 64 hex digits (`ferrymail bundle keygen`).
    pub key_file: PathBuf,
    /// Routes whose mail `ferrymail bundle export --route` writes for this peer.
    #[serde(default)]
    pub routes: Vec<String>,
}

/// The station side of ODMR: whenever `route`'s link opens (it comes up, a schedule
/// window opens, a flush runs), connect to the hub, authenticate, say ATRN, and take
/// the mail it held, as a server on that connection.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Odmr {
    /// `host:port` of the hub's `odmr` listener (366 by convention).
    pub hub: String,
    #[serde(default = "required_tls")]
    pub tls: TlsPolicy,
    pub username: String,
    pub password_file: PathBuf,
    /// The domains to ask for (ATRN), and the only ones taken from the hub.
    pub domains: Vec<String>,
    /// The route whose link opening starts a collection; default `upstream`.
    #[serde(default = "upstream_route")]
    pub route: String,
}

fn upstream_route() -> String {
    "upstream".to_owned()
}

/// A station's ODMR account: its secret (kept in a file, read as the daemon starts, as
/// CRAM-MD5 needs it) and the domains whose held mail it may take.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OdmrUser {
    pub name: String,
    pub password_file: PathBuf,
    /// Exact domains, or `.suffix` for every subdomain; each must be on a `via = "odmr"`
    /// route.
    pub domains: Vec<String>,
}

/// A DKIM signing key (RFC 6376): mail from this host whose `From:` is at `domain` (or
/// below it) is signed with it when committed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    /// The private key, PEM.
    pub key: PathBuf,
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// Header fields to sign, when present (default: the usual ones); `From:` is always
    /// signed, and once more than it appears, so that none can be added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum DkimAlgorithm {
    #[default]
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The `a=` tag value.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Local {
    /// More names (domains) of this host: mail to them is local.
    pub names: Vec<String>,
    /// An aliases file (`name: target, target`), read with `[aliases]` over it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aliases_file: Option<PathBuf>,
}

/// An alias's targets: one, or a list.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AliasTargets {
    One(String),
    Many(Vec<String>),
}

impl AliasTargets {
    pub(crate) fn list(&self) -> Vec<String> {
        match self {
            AliasTargets::One(t) => vec![t.clone()],
            AliasTargets::Many(list) => list.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where `GET /metrics` answers, e.g. `127.0.0.1:9325`.
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub addr: SocketAddr,
    #[serde(default)]
    pub kind: ListenKind,
    /// `odmr`: AUTH only over TLS (STARTTLS), so a password never crosses in the clear;
    /// `false` also allows CRAM-MD5 and PLAIN without TLS.
    #[serde(default = "yes")]
    pub require_tls: bool,
    /// Offer XFERRY (zstd content, resumable transfers) to other ferrymail nodes
    /// (docs/xferry.md). Only a client configured for it uses it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ferry: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenKind {
    /// Port-25 style: anyone may send to our domains; relay by network or AUTH.
    #[default]
    Smtp,
    /// RFC 6409 submission: AUTH required before MAIL, STARTTLS before AUTH.
    Submission,
    /// RFC 8314 implicit TLS.
    Smtps,
    /// RFC 2645 On-Demand Mail Relay: a station authenticates, says ATRN, and takes its
    /// held mail over the same connection (port 366 by convention).
    Odmr,
}

impl ListenKind {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenKind::Smtp => "smtp",
            ListenKind::Submission => "submission",
            ListenKind::Smtps => "smtps",
            ListenKind::Odmr => "odmr",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Accept {
    pub max_message_size: ByteSize,
    pub max_recipients: u32,
    pub relay_networks: Vec<IpNet>,
    pub local_domains: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<PathBuf>,
    /// SMTP connections one listener takes at once.
    pub max_connections: usize,
    /// Connections at once from one client address (not for `relay_networks`).
    pub max_connections_per_client: usize,
    /// Of `max_connections`, how many only `relay_networks` clients may take.
    pub reserved_connections: usize,
    /// Waiting for a command, or for more content.
    pub command_timeout: HumanDuration,
    /// The longest an SMTP session may last.
    pub session_timeout: HumanDuration,
    /// Content must arrive at least this fast, in octets a second (0: no floor).
    pub min_data_rate: ByteSize,
    /// How long a `ferry` listener keeps what arrived of a cut transfer for the sender
    /// to resume.
    pub resume_keep: HumanDuration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    Required,
    #[default]
    Opportunistic,
    Implicit,
    None,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` of the smarthost.
    pub smarthost: String,
    #[serde(default = "required_tls")]
    pub tls: TlsPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The smarthost's own link settings, over `[link]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<RouteLink>,
    /// Local senders rewritten to the account's address for mail by this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// The smarthost is a ferrymail node: use XFERRY where it offers it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ferry: bool,
}

/// Sender rewriting for a route (`[upstream.rewrite]`, `[route.rewrite]`), as a
/// provider's smarthost wants: its account's address, not `root@laptop`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rewrite {
    /// Sender to the address it becomes. Keys: `name@domain` (that address), `name`
    /// (that name at any local name), `@domain` (anyone there), `*` (anyone at a local
    /// name); the most exact key wins.
    pub senders: BTreeMap<String, String>,
    /// Rewrite the `From:` header's address too (default: the envelope only).
    pub from_header: bool,
    /// Where a rewritten `From:` keeps the original: `none`, `sender` or `reply-to`.
    pub keep_original: KeepOriginal,
    /// Also rewrite mail relayed for other hosts (SMTP clients without AUTH).
    pub relayed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepOriginal {
    #[default]
    None,
    Sender,
    ReplyTo,
}

fn required_tls() -> TlsPolicy {
    TlsPolicy::Required
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// What logs and `status` call it; default: its first domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Exact domains, or `.suffix` for every subdomain.
    pub domains: Vec<String>,
    /// `host:port`, or `"mx"` for the recipients' MX hosts (`"mx:PORT"` on another port).
    #[serde(default = "mx")]
    pub via: String,
    /// Keep the mail until ETRN or a flush names the domain (a hub's held domains).
    #[serde(default)]
    pub hold: bool,
    #[serde(default)]
    pub tls: TlsPolicy,
    /// The route's own link settings, over `[link]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<RouteLink>,
    /// Local senders rewritten for mail by this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// `via` is a ferrymail node: use XFERRY where it offers it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ferry: bool,
}

/// A route's own link settings (`[route.link]`, `[upstream.link]`): each key set here
/// replaces `[link]`'s for this route; the others follow `[link]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteLink {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<LinkMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    /// Domains to ETRN over this route when its link comes up (relay routes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etrn: Option<Vec<String>>,
}

fn mx() -> String {
    "mx".to_owned()
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// `ip:port` of resolvers to ask; empty = the system resolver.
    pub servers: Vec<SocketAddr>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    #[default]
    Auto,
    Schedule,
    Manual,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Link {
    pub mode: LinkMode,
    pub probe_interval: HumanDuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_file: Option<PathBuf>,
    /// `"HH:MM-HH:MM"` local time; may cross midnight.
    pub windows: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    /// Domains to ETRN over the smarthost (`[upstream]`) when its link comes up.
    pub etrn: Vec<String>,
}

impl Link {
    /// The link settings of a route: these, with `own` over them. `link.etrn` is for the
    /// smarthost only (`upstream`); another route ETRNs only what its own settings name.
    pub(crate) fn for_route(&self, own: Option<&RouteLink>, upstream: bool) -> Link {
        let own = own.cloned().unwrap_or_default();
        Link {
            mode: own.mode.unwrap_or(self.mode),
            probe_interval: own.probe_interval.unwrap_or(self.probe_interval),
            trigger_file: None,
            windows: own.windows.unwrap_or_else(|| self.windows.clone()),
            every: own.every.or(self.every),
            etrn: own.etrn.unwrap_or_else(|| {
                if upstream {
                    self.etrn.clone()
                } else {
                    Vec::new()
                }
            }),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    pub initial: HumanDuration,
    pub max: HumanDuration,
    /// Counted in online age: time queued while the link gate was open.
    pub expire_after: HumanDuration,
    /// Delay DSN after this much online age; `"0s"` = never.
    pub warn_after: HumanDuration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Etrn {
    pub allowed_networks: Vec<IpNet>,
    /// How long ETRN (or a flush) naming a held domain lets its mail go.
    pub open_for: HumanDuration,
}

fn net(s: &str) -> IpNet {
    s.parse().expect("built-in network")
}

fn secs(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(n))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: String::new(),
            spool: PathBuf::new(),
            admin: None,
            local: Local::default(),
            aliases: BTreeMap::new(),
            listen: vec![Listen {
                addr: SocketAddr::from(([127, 0, 0, 1], 2525)),
                kind: ListenKind::Smtp,
                require_tls: true,
                ferry: false,
            }],
            tls: None,
            accept: Accept::default(),
            upstream: None,
            route: Vec::new(),
            dns: Dns::default(),
            link: Link::default(),
            retry: Retry::default(),
            etrn: Etrn::default(),
            metrics: None,
            dkim: Vec::new(),
            odmr_user: Vec::new(),
            odmr: None,
            bundle: Bundle::default(),
            bundle_peer: Vec::new(),
        }
    }
}

impl Default for Accept {
    fn default() -> Self {
        Accept {
            max_message_size: ByteSize(25 << 20),
            max_recipients: 100,
            relay_networks: vec![net("127.0.0.0/8"), net("::1/128")],
            local_domains: Vec::new(),
            users: None,
            max_connections: 256,
            max_connections_per_client: 10,
            reserved_connections: 32,
            command_timeout: secs(300),
            session_timeout: secs(3600),
            min_data_rate: ByteSize(500),
            resume_keep: secs(86400),
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Link {
            mode: LinkMode::Auto,
            probe_interval: secs(30),
            trigger_file: None,
            windows: Vec::new(),
            every: None,
            etrn: Vec::new(),
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: secs(5 * 60),
            max: secs(4 * 3600),
            expire_after: secs(5 * 86400),
            warn_after: secs(4 * 3600),
        }
    }
}

impl Default for Etrn {
    fn default() -> Self {
        Etrn {
            allowed_networks: vec![net("127.0.0.0/8"), net("::1/128")],
            open_for: secs(600),
        }
    }
}
