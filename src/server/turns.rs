//! What an `odmr` listener (RFC 2645) knows and needs: the stations' accounts and which
//! domains each may claim (`OdmrUsers`), the service the daemon provides for ATRN
//! (`Turns`: what is waiting, the one-turn-per-domain locks, the delivery itself), and
//! the replies of RFC 2645 §4.2: 450 a domain the station may not claim, 451 a domain
//! another session is turning, 453 no mail waiting. The connection's side is `odmr`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use super::stream::Stream;
use crate::config::{Config, domain_matches};
use crate::smtp::reply::{Reply, Status};

/// One station's account.
#[derive(Clone, Debug)]
struct Account {
    name: String,
    secret: String,
    /// Exact domains, or `.suffix` patterns.
    domains: Vec<String>,
}

/// The `[[odmr_user]]` accounts, their secrets read.
#[derive(Clone, Debug, Default)]
pub struct OdmrUsers {
    accounts: Vec<Account>,
}

impl OdmrUsers {
    /// Reads every account's password file (the first line is the secret).
    pub fn load(config: &Config) -> Result<OdmrUsers, String> {
        let mut accounts = Vec::new();
        for (i, u) in config.odmr_user.iter().enumerate() {
            let text = std::fs::read_to_string(&u.password_file).map_err(|e| {
                format!(
                    "odmr_user[{i}].password_file {}: {e}",
                    u.password_file.display()
                )
            })?;
            let secret = text.lines().next().unwrap_or("").to_owned();
            if secret.is_empty() {
                return Err(format!(
                    "odmr_user[{i}].password_file {}: empty",
                    u.password_file.display()
                ));
            }
            accounts.push(Account {
                name: u.name.clone(),
                secret,
                domains: u.domains.clone(),
            });
        }
        Ok(OdmrUsers { accounts })
    }

    fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The secret CRAM-MD5 needs.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.account(name).map(|a| a.secret.clone())
    }

    /// PLAIN: whether `password` is `name`'s (compared in constant time).
    pub(crate) fn check_plain(&self, name: &str, password: &str) -> bool {
        self.account(name)
            .is_some_and(|a| crate::smtp::cram_md5::same_secret(&a.secret, password))
    }

    /// Whether `name` may claim `domain`'s mail.
    pub(crate) fn may_claim(&self, name: &str, domain: &str) -> bool {
        self.account(name)
            .is_some_and(|a| a.domains.iter().any(|p| domain_matches(p, domain)))
    }
}

/// A turn granted: the domains it takes, locked for this session until it is dropped.
pub struct Ticket {
    pub user: String,
    pub domains: Vec<String>,
    /// Each domain's lane, in the same order.
    pub lanes: Vec<String>,
    /// Releases the locks when dropped.
    pub locks: Box<dyn Send + Sync>,
}

/// What the daemon provides for ODMR.
pub trait Turns: Send + Sync {
    fn users(&self) -> &OdmrUsers;

    /// Decides ATRN for authenticated `user` asking for `asked` (empty: all its
    /// domains): the turn, or the reply that refuses it.
    fn begin<'a>(
        &'a self,
        user: &'a str,
        asked: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Result<Ticket, Reply>> + Send + 'a>>;

    /// Runs the turned connection: the station greets, we deliver, then QUIT.
    fn run(
        &self,
        ticket: Ticket,
        stream: Stream,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

const fn st(class: u8, subject: u16, detail: u16) -> Option<Status> {
    Some(Status(class, subject, detail))
}

pub const TURNING: Reply = Reply::new(250, st(2, 0, 0), "OK, turnaround now");
pub const NO_MAIL: Reply = Reply::new(453, st(4, 3, 0), "You have no mail");

/// 450: `user` may not claim `domain`.
pub fn refused(user: &str, domain: &str) -> Reply {
    Reply::new(450, st(4, 7, 1), "").with_text(format!(
        "ATRN request refused: {user} may not claim {domain}"
    ))
}

/// 451: another session is turning `domain`.
pub(crate) fn busy(domain: &str) -> Reply {
    Reply::new(451, st(4, 3, 0), "").with_text(format!(
        "Unable to process ATRN request now: {domain} is being turned by another session"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_claim_their_domains_only() {
        let users = OdmrUsers {
            accounts: vec![Account {
                name: "station".into(),
                secret: "s3cret".into(),
                domains: vec!["field.example".into(), ".field.example".into()],
            }],
        };
        assert!(users.may_claim("station", "field.example"));
        assert!(users.may_claim("station", "lab.field.example"));
        assert!(!users.may_claim("station", "other.example"));
        assert!(!users.may_claim("nobody", "field.example"));
        assert!(users.check_plain("station", "s3cret"));
        assert!(!users.check_plain("station", "s3cre"));
        assert_eq!(busy("a.example").code, 451);
        assert_eq!(refused("s", "a.example").code, 450);
    }
}
