//! On-Demand Mail Relay (RFC 2645) on the connection: a station authenticates (CRAM-MD5,
//! or PLAIN) as an `[[odmr_user]]` and says `ATRN`; if its held mail may go, we answer
//! 250 and the connection turns round: the station greets as a server and the daemon's
//! `Turns` delivers to it as a client, over the same socket.

use super::conn::{Conn, Ended};
use super::turns::TURNING;
use crate::smtp::reply;

impl Conn {
    /// AUTH on an `odmr` listener: CRAM-MD5 (RFC 2195) or PLAIN, against the
    /// `[[odmr_user]]` accounts.
    pub(super) async fn odmr_auth(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
    ) -> Result<(), Ended> {
        let Some(turns) = self.ctx.odmr.clone() else {
            self.reply(&reply::NOT_IMPLEMENTED);
            return Ok(());
        };
        let user = if mechanism == "CRAM-MD5" {
            let challenge = crate::smtp::cram_md5::challenge(&self.ctx.session.hostname);
            let encoded = base64_encode(challenge.as_bytes());
            let Some(response) = self.sasl_response(&encoded).await? else {
                return Ok(());
            };
            let Ok(response) = super::auth::decode(&response) else {
                self.reply(&reply::SASL_BAD_BASE64);
                return Ok(());
            };
            crate::smtp::cram_md5::verify(&challenge, &response, &|u| turns.users().secret(u))
        } else {
            let response = match initial.as_deref() {
                Some("=") => String::new(),
                Some(r) => r.to_owned(),
                None => match self.sasl_response("").await? {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            match super::auth::decode_plain(&response) {
                Ok((user, password)) => turns.users().check_plain(&user, &password).then_some(user),
                Err(_) => {
                    self.reply(&reply::SASL_BAD_BASE64);
                    return Ok(());
                }
            }
        };
        match user {
            Some(user) => {
                tracing::info!(peer = %self.peer, user = %user, "ODMR station authenticated");
                self.session.authenticated_as(user);
                self.reply(&reply::AUTH_OK);
                Ok(())
            }
            None => {
                tracing::warn!(peer = %self.peer, "ODMR authentication failed");
                self.auth_failures += 1;
                if self.auth_failures >= super::auth::MAX_FAILURES_PER_CONNECTION {
                    self.reply(&reply::AUTH_FAILED);
                    return self.close(&reply::TOO_MANY_ERRORS).await;
                }
                self.reply(&reply::AUTH_FAILED);
                Ok(())
            }
        }
    }

    /// ATRN: refused with its reply, or granted: 250, and the connection is the turn's.
    pub(super) async fn atrn(&mut self, domains: Vec<String>) -> Result<(), Ended> {
        let (Some(turns), Some(user)) = (
            self.ctx.odmr.clone(),
            self.session.authenticated().map(str::to_owned),
        ) else {
            self.reply(&reply::AUTH_REQUIRED);
            return Ok(());
        };
        let ticket = match turns.begin(&user, &domains).await {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::info!(peer = %self.peer, user = %user, reply = %refusal.code, "ATRN refused");
                self.reply(&refusal);
                return Ok(());
            }
        };
        self.reply(&TURNING);
        self.send_replies().await?;
        if !self.input.is_empty() {
            // Nothing may follow ATRN before the turn: the station's greeting must be
            // the first thing it says as a server.
            return Err(Ended::Closed);
        }
        let stream = std::mem::replace(&mut self.stream, crate::net::MaybeTls::Gone);
        tracing::info!(peer = %self.peer, user = %user, domains = ?ticket.domains, "ODMR turn");
        turns.run(ticket, stream, self.peer).await;
        Err(Ended::Closed)
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
