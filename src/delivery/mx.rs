//! Where a domain's mail goes when no route names a relay (RFC 5321 §5.1): its MX hosts
//! in preference order, shuffled among equals so load spreads; the domain itself when it
//! has no MX (the implicit MX); nowhere for a null MX (RFC 7505). The resolver is
//! hickory's, pointed at `[dns] servers` or the system's. DNS answers map to delivery
//! events: NXDOMAIN bounces, SERVFAIL defers, and a resolver that does not answer at all
//! is our link, not the destination (README, "Intermittent links").
//!
//! A resolver is believed only once it has vouched for itself: it must give the NS
//! records of the recipient's top-level domain (or of the root, for the link probe),
//! which exist, and must not resolve a random name under it, which cannot exist. A
//! resolver that fails either (an offline LAN resolver answering NXDOMAIN for
//! everything, a captive portal answering for everything) is our link being down: the
//! mail waits, and nothing bounces on its word.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;

use super::outcome::Event;

/// One MX host, with its addresses in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailHost {
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
}

/// Most MX hosts looked at per domain (Postfix's `smtp_mx_session_limit` is 2 and
/// `smtp_mx_address_limit` 5; hosts beyond these rarely answer when the first fail).
const MAX_HOSTS: usize = 10;

/// The resolver for MX delivery. Without `[dns] servers` it follows the system's
/// configuration, read again by `refresh` (a laptop's resolvers change with its network).
pub struct MxResolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    current: Mutex<Option<Arc<TokioResolver>>>,
    /// What vouching found, per zone, and when.
    vouched: Mutex<HashMap<String, Vouched>>,
}

/// When a resolver was asked to vouch for a zone, and what it showed.
type Vouched = (Instant, Result<(), String>);

/// How long a resolver that vouched for a zone is believed about it.
const TRUSTED_FOR: Duration = Duration::from_secs(300);
/// How long a resolver that failed to vouch is disbelieved before it is asked again.
const DISTRUSTED_FOR: Duration = Duration::from_secs(5);

impl MxResolver {
    /// A resolver asking `servers` (empty: the system's), each query waiting `timeout`.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> MxResolver {
        let resolver = MxResolver {
            servers: servers.to_vec(),
            timeout,
            current: Mutex::new(None),
            vouched: Mutex::new(HashMap::new()),
        };
        resolver.refresh();
        resolver
    }

    /// Rebuilds the resolver: the system configuration is read again and the cache is
    /// emptied. Called when a link comes up.
    pub(crate) fn refresh(&self) {
        let built = self.build();
        if let Err(e) = &built {
            tracing::warn!(error = %e, "no DNS resolver configuration; MX lookups fail until it appears");
        }
        *self.current.lock().expect("not poisoned") = built.ok().map(Arc::new);
        self.vouched.lock().expect("not poisoned").clear();
    }

    fn build(&self) -> Result<TokioResolver, NetError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if self.servers.is_empty() {
            TokioResolver::builder(provider)?
        } else {
            let servers = self
                .servers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = self.timeout;
        options.attempts = 1;
        options.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        builder.build()
    }

    fn resolver(&self) -> Option<Arc<TokioResolver>> {
        self.current.lock().expect("not poisoned").clone()
    }

    /// Whether the resolver answers, and can be believed: it vouches for the root. The
    /// link probe for direct MX.
    pub async fn reachable(&self) -> Result<(), String> {
        let Some(resolver) = self.resolver() else {
            return Err("no resolver configured".into());
        };
        self.vouch(&resolver, ".").await
    }

    /// Whether `resolver` can be believed about names under `zone` (a fully qualified
    /// name: `"."` or `"com."`), asking it at most every few minutes.
    async fn vouch(&self, resolver: &TokioResolver, zone: &str) -> Result<(), String> {
        if let Some((at, verdict)) = self.vouched.lock().expect("not poisoned").get(zone) {
            let valid = if verdict.is_ok() {
                TRUSTED_FOR
            } else {
                DISTRUSTED_FOR
            };
            if at.elapsed() < valid {
                return verdict.clone();
            }
        }
        let verdict = vouch(resolver, zone).await;
        if let Err(why) = &verdict {
            tracing::warn!(zone, reason = %why, "the DNS resolver is not believed");
        }
        self.vouched
            .lock()
            .expect("not poisoned")
            .insert(zone.to_owned(), (Instant::now(), verdict.clone()));
        verdict
    }

    /// The hosts to deliver `domain`'s mail to, best first, each with its addresses.
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<MailHost>, Event> {
        let Some(resolver) = self.resolver() else {
            return Err(Event::DnsUnreachable);
        };
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let tld = format!(
            "{}.",
            fqdn.trim_end_matches('.').rsplit('.').next().unwrap_or("")
        );
        if let Err(why) = self.vouch(&resolver, &tld).await {
            return Err(Event::DnsUntrusted(why));
        }
        let mut hosts = match resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut found: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                // RFC 7505 §3: a single MX of "." says the domain takes no mail.
                if found.len() == 1 && found[0].1 == "." {
                    return Err(Event::NullMx);
                }
                found.retain(|(_, name)| name != ".");
                if found.is_empty() {
                    vec![(0, fqdn.clone())]
                } else {
                    found
                }
            }
            Err(e) => match dns_failure(&e) {
                Failure::NoData => vec![(0, fqdn.clone())], // RFC 5321 §5.1: implicit MX
                Failure::NxDomain => return Err(Event::NoSuchDomain),
                other => return Err(other.event(domain)),
            },
        };
        order_by_preference(&mut hosts, &mut random_u64);
        hosts.truncate(MAX_HOSTS);
        let mut out = Vec::new();
        let mut worst: Option<Failure> = None;
        for (preference, name) in hosts {
            match resolver.lookup_ip(name.as_str()).await {
                Ok(ips) => out.push(MailHost {
                    name: name.trim_end_matches('.').to_owned(),
                    preference,
                    addrs: ips.iter().collect(),
                }),
                Err(e) => {
                    let f = dns_failure(&e);
                    if worst.as_ref().is_none_or(|w| f.rank() > w.rank()) {
                        worst = Some(f);
                    }
                }
            }
        }
        out.retain(|h| !h.addrs.is_empty());
        if out.is_empty() {
            return Err(match worst {
                Some(f @ (Failure::Unreachable | Failure::Temporary(_))) => f.event(domain),
                _ => Event::NoMailHost(format!("no address for any mail host of {domain}")),
            });
        }
        Ok(out)
    }
}

/// Asks `resolver` what a healthy one must answer about `zone`: its NS records (they
/// exist), and NXDOMAIN for a random name under it (it cannot exist).
async fn vouch(resolver: &TokioResolver, zone: &str) -> Result<(), String> {
    match resolver.ns_lookup(zone).await {
        Ok(ns) if ns.answers().iter().any(|r| matches!(r.data, RData::NS(_))) => {}
        Ok(_) => return Err(format!("it gives no NS records for {zone}")),
        Err(e) => {
            return Err(format!(
                "it cannot give the NS records of {zone}: {}",
                describe(&e)
            ));
        }
    }
    let nonsense = format!(
        "ferrymail-vouch-{:016x}.{}",
        random_u64(),
        zone.trim_start_matches('.')
    );
    match resolver.lookup_ip(nonsense.as_str()).await {
        Ok(ips) if ips.iter().next().is_some() => Err(format!(
            "it resolves {nonsense}, which cannot exist: its answers are not the internet's"
        )),
        Ok(_) => Ok(()),
        Err(e) => match dns_failure(&e) {
            Failure::NxDomain | Failure::NoData => Ok(()),
            _ => Err(format!(
                "it cannot say that {nonsense} does not exist: {}",
                describe(&e)
            )),
        },
    }
}

/// What a failed lookup means for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// NOERROR without records: the name exists, with no data of that type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// The resolver answered with an error (SERVFAIL, REFUSED, …).
    Temporary(String),
    /// No answer at all: timeout, no route, no resolver.
    Unreachable,
}

impl Failure {
    /// Which failure explains a domain best when several hosts failed differently.
    fn rank(&self) -> u8 {
        match self {
            Failure::NoData | Failure::NxDomain => 0,
            Failure::Temporary(_) => 1,
            Failure::Unreachable => 2,
        }
    }

    fn event(self, domain: &str) -> Event {
        match self {
            Failure::Unreachable => Event::DnsUnreachable,
            Failure::Temporary(why) => Event::DnsFailure(format!("{domain}: {why}")),
            Failure::NxDomain => Event::NoSuchDomain,
            Failure::NoData => Event::NoMailHost(format!("no address for {domain}")),
        }
    }
}

fn dns_failure(e: &NetError) -> Failure {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            if no.response_code == ResponseCode::NXDomain {
                Failure::NxDomain
            } else {
                Failure::NoData
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => Failure::Temporary(match *code {
            ResponseCode::ServFail => "SERVFAIL".to_owned(),
            ResponseCode::Refused => "REFUSED".to_owned(),
            other => other.to_string(),
        }),
        NetError::Timeout | NetError::NoConnections | NetError::Io(_) | NetError::Busy => {
            Failure::Unreachable
        }
        other => Failure::Temporary(other.to_string()),
    }
}

/// A failed lookup in a few words, for logs and `status` (hickory's own text quotes
/// its query structures).
fn describe(e: &NetError) -> String {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if no.response_code == ResponseCode::NXDomain =>
        {
            "no such name (NXDOMAIN)".to_owned()
        }
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            format!("no records in its answer ({})", no.response_code)
        }
        NetError::Dns(DnsError::ResponseCode(code)) => format!("it answered {code}"),
        NetError::Timeout => "no answer in time".to_owned(),
        NetError::NoConnections => "no name server to ask".to_owned(),
        other => other.to_string(),
    }
}

/// Sorts by preference, lowest first, shuffling hosts of equal preference (RFC 5321
/// §5.1: "the sender-SMTP MUST randomize them to spread the load").
fn order_by_preference(hosts: &mut [(u16, String)], random: &mut dyn FnMut() -> u64) {
    let mut keyed: Vec<(u16, u64, (u16, String))> =
        hosts.iter().map(|h| (h.0, random(), h.clone())).collect();
    keyed.sort_by_key(|(preference, key, _)| (*preference, *key));
    for (slot, (_, _, host)) in hosts.iter_mut().zip(keyed) {
        *slot = host;
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_order_with_equals_shuffled() {
        let hosts = |names: &[(u16, &str)]| -> Vec<(u16, String)> {
            names.iter().map(|(p, n)| (*p, n.to_string())).collect()
        };
        let mut seen_first = std::collections::HashSet::new();
        for seed in 0..64u64 {
            let mut h = hosts(&[(20, "c"), (10, "a"), (10, "b"), (30, "d")]);
            let mut n = seed;
            let mut random = move || {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                n >> 11
            };
            order_by_preference(&mut h, &mut random);
            let prefs: Vec<u16> = h.iter().map(|x| x.0).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
            seen_first.insert(h[0].1.clone());
        }
        assert_eq!(seen_first.len(), 2, "both equal hosts come first sometimes");
    }
}
