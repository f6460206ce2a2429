//! Who mail is for and who it is from, as this host sees it, decided once when a message
//! is committed: local names, their aliases and the admin address (`local`, `aliases`);
//! the sender rewritten for a smarthost account (`rewrite`), in the `From:` header too
//! when asked (`from_header`). Pure: the configuration in, decisions out; the parts that
//! commit mail (SMTP intake, maildrop pickup, notices) apply them.

pub mod aliases;
pub mod from_header;
pub mod local;
pub mod rewrite;

pub use local::{LocalMail, LocalNames};

use crate::config::Config;
use crate::spool::Envelope;
use from_header::FromEdit;
use rewrite::RouteRewrites;

/// Everything that decides a committed message's identity.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub local: LocalMail,
    rewrites: RouteRewrites,
}

impl Identity {
    /// From the configuration alone (no aliases file).
    pub fn from_config(config: &Config) -> Result<Identity, String> {
        Ok(Identity {
            local: LocalMail::from_config(config)?,
            rewrites: RouteRewrites::from_config(config),
        })
    }

    /// With the aliases file read; also returns what it left out.
    pub fn load(config: &Config) -> Result<(Identity, Vec<String>), String> {
        let (local, warnings) = LocalMail::load(config)?;
        let identity = Identity {
            local,
            rewrites: RouteRewrites::from_config(config),
        };
        Ok((identity, warnings))
    }

    /// Resolves `envelope`'s local recipients and rewrites its sender by the routes its
    /// recipients take; returns the edit its `From:` header needs, if any.
    pub fn prepare(&self, envelope: &mut Envelope) -> Option<FromEdit> {
        envelope.recipients = self.local.resolve(std::mem::take(&mut envelope.recipients));
        let mut domains: Vec<&str> = envelope
            .recipients
            .iter()
            .filter(|r| !self.local.is_local(&r.address))
            .filter_map(|r| r.address.rsplit_once('@').map(|(_, d)| d))
            .collect();
        domains.sort_unstable();
        domains.dedup();
        let names = self.local.names();
        let (to, rewrite) =
            self.rewrites
                .decide(&envelope.sender, &envelope.origin, &domains, names)?;
        let edit = rewrite.from_header.then(|| FromEdit {
            rewrite: rewrite.clone(),
            local: names.clone(),
        });
        envelope.sender = to;
        edit
    }
}
