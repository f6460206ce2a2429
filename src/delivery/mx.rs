//! Where a domain's mail goes when no route names a relay (RFC 5321 §5.1): its MX hosts
//! in preference order, shuffled among equals so load spreads; the domain itself when it
//! has no MX (the implicit MX); nowhere for a null MX (RFC 7505). The resolver is
//! hickory's, pointed at `[dns] servers` or the system's. DNS answers map to delivery
//! events: NXDOMAIN bounces, SERVFAIL defers, and a resolver that does not answer at all
//! is our link, not the destination (DESIGN §1.4).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl MxResolver {
    /// A resolver asking `servers` (empty: the system's), each query waiting `timeout`.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> MxResolver {
        let resolver = MxResolver {
            servers: servers.to_vec(),
            timeout,
            current: Mutex::new(None),
        };
        resolver.refresh();
        resolver
    }

    /// Rebuilds the resolver: the system configuration is read again and the cache is
    /// emptied. Called when a link comes up.
    pub fn refresh(&self) {
        let built = self.build();
        if let Err(e) = &built {
            tracing::warn!(error = %e, "no DNS resolver configuration; MX lookups fail until it appears");
        }
        *self.current.lock().expect("not poisoned") = built.ok().map(Arc::new);
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

    /// Whether the resolver answers at all (the root's NS; any answer, even an error
    /// code, proves it reachable). The link probe for direct MX.
    pub async fn reachable(&self) -> Result<(), String> {
        let Some(resolver) = self.resolver() else {
            return Err("no resolver configured".into());
        };
        match resolver.ns_lookup(".").await {
            Ok(_) => Ok(()),
            Err(e) => match dns_failure(&e) {
                Failure::Unreachable => Err(e.to_string()),
                _ => Ok(()),
            },
        }
    }

    /// The hosts to deliver `domain`'s mail to, best first, each with its addresses.
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<MailHost>, Event> {
        let Some(resolver) = self.resolver() else {
            return Err(Event::DnsUnreachable);
        };
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
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
