//! The SASL exchange of SMTP AUTH (RFC 4954) on a connection: PLAIN (RFC 4616) with or
//! without an initial response, and LOGIN. Credentials are checked on a blocking thread
//! under the shared semaphore; unknown users and wrong passwords get the same reply; too
//! many failures close the connection, and a throttled address is refused outright.

use super::auth::{self, MAX_FAILURES_PER_CONNECTION};
use super::conn::{Conn, Ended};
use crate::smtp::line::Framed;
use crate::smtp::reply;

impl Conn {
    /// RFC 4954 AUTH PLAIN (RFC 4616) or LOGIN. The same reply for an unknown user and a
    /// wrong password; closed after too many failures here or from this address.
    pub(super) async fn auth(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
    ) -> Result<(), Ended> {
        let Some(ctx) = self.ctx.auth.clone() else {
            self.reply(&reply::NOT_IMPLEMENTED);
            return Ok(());
        };
        let ip = self.peer.ip();
        if ctx.throttle.blocked(ip) {
            return self
                .close(&reply::TOO_MANY_ERRORS.with_text("Too many failed authentications"))
                .await;
        }
        let credentials = match mechanism {
            "PLAIN" => {
                let response = match initial.as_deref() {
                    Some("=") => String::new(),
                    Some(r) => r.to_owned(),
                    None => match self.sasl_response("").await? {
                        Some(r) => r,
                        None => return Ok(()),
                    },
                };
                auth::decode_plain(&response)
            }
            _ => {
                let user = match initial {
                    Some(u) => auth::decode(&u),
                    None => match self.sasl_response("VXNlcm5hbWU6").await? {
                        Some(u) => auth::decode(&u),
                        None => return Ok(()),
                    },
                };
                let Ok(user) = user else {
                    self.reply(&reply::SASL_BAD_BASE64);
                    return Ok(());
                };
                match self.sasl_response("UGFzc3dvcmQ6").await? {
                    Some(p) => auth::decode(&p).map(|p| (user, p)),
                    None => return Ok(()),
                }
            }
        };
        let Ok((user, password)) = credentials else {
            self.reply(&reply::SASL_BAD_BASE64);
            return Ok(());
        };
        let permit = ctx.checks.acquire().await.expect("never closed");
        let checker = ctx.clone();
        let name = user.clone();
        let ok = tokio::task::spawn_blocking(move || checker.users.verify(&name, &password))
            .await
            .unwrap_or(false);
        drop(permit);
        if ok {
            tracing::info!(peer = %self.peer, user = %user, "authenticated");
            self.session.authenticated_as(user);
            self.reply(&reply::AUTH_OK);
            return Ok(());
        }
        tracing::warn!(peer = %self.peer, "authentication failed");
        ctx.throttle.failed(ip);
        self.auth_failures += 1;
        if self.auth_failures >= MAX_FAILURES_PER_CONNECTION {
            self.reply(&reply::AUTH_FAILED);
            return self.close(&reply::TOO_MANY_ERRORS).await;
        }
        self.reply(&reply::AUTH_FAILED);
        Ok(())
    }

    /// Sends a 334 challenge and reads one response line; `None` when the client
    /// cancelled with `*` or the line was unusable (the reply is already queued).
    pub(super) async fn sasl_response(&mut self, challenge: &str) -> Result<Option<String>, Ended> {
        self.reply(&reply::AUTH_CONTINUE.with_text(challenge.to_owned()));
        loop {
            match self.framer.next(&self.input) {
                Framed::Line { len, consumed } => {
                    let line = String::from_utf8_lossy(&self.input[..len]).into_owned();
                    self.input.drain(..consumed);
                    if line.trim() == "*" {
                        self.reply(&reply::SASL_CANCELLED);
                        return Ok(None);
                    }
                    return Ok(Some(line));
                }
                Framed::TooLong { consumed } => {
                    self.input.drain(..consumed);
                    self.reply(&reply::LINE_TOO_LONG);
                    return Ok(None);
                }
                Framed::Incomplete { consumed } => {
                    self.input.drain(..consumed);
                    let timeout = self.ctx.timeouts.command;
                    self.read_more(timeout).await?;
                }
                Framed::BareLineEnding => {
                    self.close(&reply::BARE_LINE_ENDING).await?;
                    return Ok(None);
                }
            }
        }
    }
}
