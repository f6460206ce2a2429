//! The station's side of ODMR (RFC 2645): whenever the `[odmr]` route's gate opens (its
//! link comes up, a schedule window opens, a flush runs), connect out to the hub,
//! authenticate (PLAIN under TLS, or CRAM-MD5 where the policy allows plaintext), say
//! `ATRN` for our domains, and after its 250 serve SMTP on that same connection: the
//! listener's own session, intake and durability (250 only once committed), accepting
//! mail for those domains only. What arrives is routed like any other mail here. One
//! collection at a time; the next gate opening tries again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Odmr;
use crate::current::Current;
use crate::delivery::client::ClientSettings;
use crate::delivery::connect::open_relay;
use crate::link::task::OnOpen;
use crate::server::ServerContext;
use crate::server::conn::serve_connection;

pub struct OdmrPull {
    pub settings: Odmr,
    /// How to reach the hub: its TLS policy, our credentials.
    pub client: ClientSettings,
    /// The session we serve after the turn.
    pub server: Arc<Current<ServerContext>>,
    pub pulling: Arc<AtomicBool>,
}

impl OnOpen for OdmrPull {
    fn opened(self: Arc<Self>, route: &str) {
        if route != self.settings.route || self.pulling.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(async move {
            self.collect().await;
            self.pulling.store(false, Ordering::SeqCst);
        });
    }
}

impl OdmrPull {
    async fn collect(&self) {
        let hub = &self.settings.hub;
        let mut conn = match open_relay(hub, &self.client).await {
            Ok(conn) => conn,
            Err(c) => {
                tracing::warn!(hub = %hub, reason = %c.reason, "ODMR: cannot reach the hub");
                return;
            }
        };
        if !conn.capabilities().atrn {
            tracing::warn!(hub = %hub, "ODMR: the hub does not offer ATRN");
            conn.quit().await;
            return;
        }
        let reply = match conn.atrn(&self.settings.domains).await {
            Ok(reply) => reply,
            Err(c) => {
                tracing::warn!(hub = %hub, reason = %c.reason, "ODMR: ATRN failed");
                return;
            }
        };
        match reply.code {
            250 => {}
            453 => {
                tracing::info!(hub = %hub, "ODMR: the hub holds no mail for us");
                conn.quit().await;
                return;
            }
            _ => {
                tracing::warn!(hub = %hub, reply = %reply.summary(), "ODMR: ATRN refused");
                conn.quit().await;
                return;
            }
        }
        let peer = conn.peer();
        let Some(stream) = conn.into_stream() else {
            tracing::warn!(hub = %hub, "ODMR: the hub spoke before our greeting; connection dropped");
            return;
        };
        tracing::info!(hub = %hub, domains = ?self.settings.domains, "ODMR: turned; taking our mail");
        serve_connection(stream, peer, self.server.get()).await;
        tracing::info!(hub = %hub, "ODMR: collection done");
    }
}
