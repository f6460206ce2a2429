//! Opening the connection a delivery runs over: a relay's fixed `host:port`, or the best
//! MX host of a domain that answers. For MX, hosts are tried in preference order, a few
//! addresses in all; when we are one of the MX hosts only the ones preferred over us are
//! used, and when we are the best, or an MX greets with our own name, the mail loops
//! (RFC 5321 §5.1). Not reaching a smarthost is our link (README, "Intermittent links"); not reaching one
//! domain's MX hosts, while DNS answers, is that destination's trouble, unless the
//! kernel says we have no route at all.

use std::net::{IpAddr, SocketAddr};

use super::client::{ClientSettings, Connection, connect, connect_error};
use super::mx::MxResolver;
use super::outcome::{Classified, Event, Outcome, Phase, classify};
use crate::config::TlsPolicy;

/// Most addresses tried per domain (Postfix's `smtp_mx_address_limit` is 5).
const MAX_ADDRESSES: usize = 5;

/// Who we are, to see mail looping back to us.
#[derive(Clone, Debug, Default)]
pub struct LoopCheck {
    /// Our name in greetings (lower case).
    pub hostname: String,
    /// Where our SMTP listeners are bound.
    pub listeners: Vec<SocketAddr>,
}

impl LoopCheck {
    /// `addr` reaches one of our own listeners.
    fn is_us(&self, addr: SocketAddr) -> bool {
        self.listeners.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip() || (l.ip().is_unspecified() && is_local(addr.ip())))
        })
    }
}

/// An address of this machine: binding to it succeeds only if it is.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Connects to a relay (`host:port`, a name or an address literal).
pub async fn open_relay(
    host_port: &str,
    settings: &ClientSettings,
) -> Result<Connection, Classified> {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_owned();
    let addr = match tokio::net::lookup_host(host_port).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| {
            classify(
                Phase::Resolve,
                &Event::DnsFailure(format!("{host}: no address")),
            )
        })?,
        Err(_) => return Err(classify(Phase::Resolve, &Event::DnsUnreachable)),
    };
    open_with_fallback(addr, &host, settings).await
}

/// Connects to the best MX host of `domain` on `port` that answers.
pub async fn open_mx(
    domain: &str,
    port: u16,
    resolver: &MxResolver,
    settings: &ClientSettings,
    us: &LoopCheck,
) -> Result<Connection, Classified> {
    let hosts = resolver
        .mail_hosts(domain)
        .await
        .map_err(|e| classify(Phase::Resolve, &e))?;
    // RFC 5321 §5.1: "if the SMTP client finds its own address among the MX hosts, it
    // MUST discard that one and every host with an equal or worse preference".
    let ours = hosts.iter().position(|h| {
        h.addrs
            .iter()
            .any(|ip| us.is_us(SocketAddr::new(*ip, port)))
    });
    let usable = &hosts[..ours.unwrap_or(hosts.len())];
    if usable.is_empty() {
        return Err(classify(Phase::Resolve, &Event::Loop));
    }
    let mut failures: Vec<Classified> = Vec::new();
    let mut no_route = 0;
    let mut candidates: Vec<(&str, SocketAddr)> = Vec::new();
    for h in usable {
        for ip in &h.addrs {
            candidates.push((&h.name, SocketAddr::new(*ip, port)));
        }
    }
    candidates.truncate(MAX_ADDRESSES);
    for (name, addr) in candidates {
        let tcp = match connect(addr, settings.timeouts.connect).await {
            Ok(tcp) => tcp,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::NetworkUnreachable {
                    no_route += 1;
                }
                tracing::info!(host = name, %addr, reason = %connect_error(&e), "MX host did not answer; trying the next");
                failures.push(connect_failed(name, addr, &e));
                continue;
            }
        };
        match start_with_fallback(tcp, addr, name, settings).await {
            Ok(conn) if !us.hostname.is_empty() && conn.greeting == us.hostname => {
                conn.quit().await;
                return Err(classify(Phase::Banner, &Event::Loop));
            }
            Ok(conn) => return Ok(conn),
            Err(c) => {
                tracing::info!(host = name, %addr, reason = %c.reason, "MX host failed; trying the next");
                failures.push(c);
            }
        }
    }
    // A host that answered explains more than one that did not.
    let answered = failures
        .iter()
        .rposition(|c| c.outcome != Outcome::LinkDown);
    match answered {
        Some(i) => Err(failures.swap_remove(i)),
        None if no_route == failures.len() => Err(failures.pop().unwrap_or_else(|| {
            classify(Phase::Connect, &Event::ConnectFailed("no address".into()))
        })),
        None => {
            let last = failures.pop().map(|c| c.reason).unwrap_or_default();
            let domain = domain.to_owned();
            Err(classify(
                Phase::Connect,
                &Event::NoHostAnswered { domain, last },
            ))
        }
    }
}

async fn open_with_fallback(
    addr: SocketAddr,
    host: &str,
    settings: &ClientSettings,
) -> Result<Connection, Classified> {
    let tcp = connect(addr, settings.timeouts.connect)
        .await
        .map_err(|e| connect_failed(host, addr, &e))?;
    start_with_fallback(tcp, addr, host, settings).await
}

/// Starts the session; under opportunistic TLS a failed handshake is retried once in
/// clear text on a new connection, as Postfix's `may` level does.
async fn start_with_fallback(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    host: &str,
    settings: &ClientSettings,
) -> Result<Connection, Classified> {
    match Connection::start(tcp, addr, host, settings).await {
        Err(c)
            if settings.tls == TlsPolicy::Opportunistic
                && settings.credentials.is_none()
                && c.status == "4.7.5" =>
        {
            tracing::info!(host, reason = %c.reason, "TLS failed; trying again without it");
            let clear = ClientSettings {
                tls: TlsPolicy::None,
                ..settings.clone()
            };
            let tcp = connect(addr, settings.timeouts.connect)
                .await
                .map_err(|e| connect_failed(host, addr, &e))?;
            Connection::start(tcp, addr, host, &clear).await
        }
        other => other,
    }
}

fn connect_failed(host: &str, addr: SocketAddr, e: &std::io::Error) -> Classified {
    classify(
        Phase::Connect,
        &Event::ConnectFailed(format!("{host}[{addr}]: {}", connect_error(e))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_listeners_are_us() {
        let us = LoopCheck {
            hostname: "edge.test".into(),
            listeners: vec![
                "127.0.0.1:2525".parse().unwrap(),
                "0.0.0.0:25".parse().unwrap(),
            ],
        };
        assert!(us.is_us("127.0.0.1:2525".parse().unwrap()));
        assert!(!us.is_us("127.0.0.1:2526".parse().unwrap()), "another port");
        assert!(
            us.is_us("127.0.0.2:25".parse().unwrap()),
            "the wildcard covers every local address"
        );
        assert!(
            !us.is_us("192.0.2.1:25".parse().unwrap()),
            "TEST-NET is not us"
        );
    }
}
