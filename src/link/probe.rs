//! Probes: is a route's upstream reachable right now? For a relay route, a TCP connection
//! to its host (closed at once; no SMTP session is opened, so the upstream logs nothing
//! worse than a lost connection). For direct MX, whether the resolver answers: no single
//! host stands for "the internet", and DNS is what MX delivery needs first.

use std::time::Duration;

use crate::delivery::client::{connect, connect_error};
use crate::delivery::mx::MxResolver;

/// What a route's probe connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeTarget {
    /// `host:port` of a relay.
    Tcp(String),
    /// The resolver, for MX delivery.
    Dns,
}

/// Probes `target`: `Ok` says how it was reached, `Err` why not.
pub async fn probe(
    target: &ProbeTarget,
    resolver: &MxResolver,
    timeout: Duration,
) -> Result<String, String> {
    match target {
        ProbeTarget::Tcp(host_port) => {
            let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host(host_port.as_str()));
            let addr = match lookup.await {
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .ok_or_else(|| format!("{host_port}: no address"))?,
                Ok(Err(e)) => return Err(format!("resolving {host_port}: {e}")),
                Err(_) => return Err(format!("resolving {host_port}: timed out")),
            };
            match connect(addr, timeout).await {
                Ok(_) => Ok(format!("probe reached {host_port}")),
                Err(e) => Err(format!("probe of {host_port}: {}", connect_error(&e))),
            }
        }
        ProbeTarget::Dns => match tokio::time::timeout(timeout, resolver.reachable()).await {
            Ok(Ok(())) => Ok("the DNS resolver answers".into()),
            Ok(Err(why)) => Err(format!("DNS: {why}")),
            Err(_) => Err("DNS: no answer in time".into()),
        },
    }
}
