//! The ETRN client (RFC 1985) for an edge: when its link to the hub comes up, it asks the
//! hub, over one session, to start delivering what it holds for each domain in
//! `link.etrn`. The hub's replies are logged; a refusal changes nothing here, the hub
//! keeps the mail and the next link-up asks again.

use crate::delivery::client::ClientSettings;
use crate::delivery::connect::open_relay;

/// Sends `ETRN` for each of `domains` to the relay at `host_port`.
pub async fn request(host_port: &str, settings: &ClientSettings, domains: &[String]) {
    let mut conn = match open_relay(host_port, settings).await {
        Ok(conn) => conn,
        Err(c) => {
            tracing::warn!(upstream = host_port, reason = %c.reason, "ETRN: cannot connect");
            return;
        }
    };
    for domain in domains {
        match conn.etrn(domain).await {
            Ok(reply) if reply.is_positive() => {
                tracing::info!(upstream = host_port, domain = %domain, reply = %reply.summary(), "ETRN accepted")
            }
            Ok(reply) => {
                tracing::warn!(upstream = host_port, domain = %domain, reply = %reply.summary(), "ETRN refused")
            }
            Err(c) => {
                tracing::warn!(upstream = host_port, domain = %domain, reason = %c.reason, "ETRN failed");
                return;
            }
        }
    }
    conn.quit().await;
}
