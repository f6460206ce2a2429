//! Who mail is for and who it is from, as this host sees it, decided once when a message
//! is committed: local names, their aliases and the admin address (`local`, `aliases`);
//! the sender rewritten for a smarthost account (`rewrite`), in the `From:` header too
//! when asked (`from_header`); and the DKIM signer for mail this host answers for. The
//! configuration in, decisions out; the parts that commit mail (SMTP intake, maildrop
//! pickup, notices) apply them.

pub mod aliases;
pub mod from_header;
pub mod incoming;
pub mod local;
pub mod rewrite;

pub use local::{LocalMail, LocalNames};

use crate::config::Config;
use crate::dkim::{Signer, Signing};
use crate::spool::Envelope;
use from_header::{FromEdit, HeaderEditor};
use rewrite::RouteRewrites;

/// Everything that decides a committed message's identity.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub local: LocalMail,
    rewrites: RouteRewrites,
    dkim: Signing,
}

/// What a message's content needs on its way into the spool: its `From:` edited (first),
/// then the result signed.
#[derive(Debug)]
pub struct ContentEdits {
    pub header: HeaderEditor,
    pub signer: Option<Signer>,
}

impl ContentEdits {
    /// Nothing to do.
    pub fn none() -> ContentEdits {
        ContentEdits {
            header: HeaderEditor::new(None),
            signer: None,
        }
    }

    /// Feeds the signer what is written to the spool.
    pub fn written(&mut self, bytes: &[u8]) {
        if let Some(signer) = &mut self.signer {
            signer.update(bytes);
        }
    }

    /// The fields to store before the message (its DKIM signatures), once it is all
    /// written; a message that cannot be signed is stored unsigned, and the log says why.
    pub fn prepend(&mut self, id: &str) -> Vec<u8> {
        let Some(signer) = self.signer.take() else {
            return Vec::new();
        };
        match signer.finish(crate::spool::now_unix()) {
            Ok(fields) => fields,
            Err(e) => {
                tracing::warn!(id, reason = %e, "DKIM: message not signed");
                Vec::new()
            }
        }
    }
}

impl Identity {
    /// From the configuration alone: no aliases file, no DKIM keys.
    pub fn from_config(config: &Config) -> Result<Identity, String> {
        Identity::checked(LocalMail::from_config(config)?, config, Signing::default())
    }

    /// With the aliases file and the DKIM keys read; also returns what the aliases file
    /// left out. The daemon (at start and reload) and `config check` load it: an error
    /// (an alias loop, a rewrite key no sender has, an unreadable key) refuses the
    /// configuration.
    pub fn load(config: &Config) -> Result<(Identity, Vec<String>), String> {
        let (local, warnings) = LocalMail::load(config)?;
        let identity = Identity::checked(local, config, Signing::load(config)?)?;
        Ok((identity, warnings))
    }

    fn checked(local: LocalMail, config: &Config, dkim: Signing) -> Result<Identity, String> {
        if let Some(admin) = local.admin()
            && local.is_local(admin)
        {
            return Err(format!(
                "admin: \"{admin}\" is a local name: the admin address must be somewhere mail can go"
            ));
        }
        Ok(Identity {
            local,
            rewrites: RouteRewrites::from_config(config)?,
            dkim,
        })
    }

    /// Resolves `envelope`'s local recipients and rewrites its sender by the routes its
    /// recipients take; returns what its content needs: a `From:` edit, a signer.
    pub(crate) fn prepare(&self, envelope: &mut Envelope) -> ContentEdits {
        let from = self.settle_sender(envelope);
        ContentEdits {
            header: HeaderEditor::new(from),
            signer: self.dkim.signer_for(&envelope.origin),
        }
    }

    fn settle_sender(&self, envelope: &mut Envelope) -> Option<FromEdit> {
        envelope.recipients = self.local.resolve(std::mem::take(&mut envelope.recipients));
        let mut domains: Vec<&str> = envelope
            .recipients
            .iter()
            .filter(|r| !self.local.is_local(&r.address))
            .map(|r| r.address.domain())
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
        envelope.sender = to.into();
        edit
    }
}
