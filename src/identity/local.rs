//! Mail for this host: a relay has no mailboxes, so mail to a local name (an address at
//! `hostname`, `localhost` or a name in `[local] names`) is resolved when it is
//! committed: by its alias, else to the admin address (as nullmailer's adminaddr does),
//! else it stays in the queue, held with a reason, and never leaves for a host that is
//! not ours. Each new recipient keeps the address it was sent to as its ORCPT (RFC 3461
//! §4.2), so a notice names what the sender wrote.

use std::sync::Arc;

use super::aliases::{Aliases, Target, Written, check_target, is_alias_name, parse_file};
use crate::config::Config;
use crate::smtp::Mailbox;
use crate::spool::Recipient;

/// Why mail to a local name with nowhere to go waits.
pub const KEPT: &str = "a local name with no alias and no admin address: set `admin` or an \
                        [aliases] entry, reload, then `ferrymail queue release`";

/// The names that are this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNames {
    /// Lowercase, without a trailing dot; the hostname first.
    names: Vec<String>,
}

impl LocalNames {
    pub fn new(hostname: &str, extra: &[String]) -> LocalNames {
        let mut names = vec![normal(hostname), "localhost".to_owned()];
        for name in extra {
            let name = normal(name);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        LocalNames { names }
    }

    pub fn from_config(config: &Config) -> LocalNames {
        LocalNames::new(&config.hostname, &config.local.names)
    }

    /// Whether `domain` is one of our names.
    pub fn contains(&self, domain: &str) -> bool {
        let domain = normal(domain);
        self.names.contains(&domain)
    }

    /// Our hostname, which qualifies bare names.
    pub fn hostname(&self) -> &str {
        &self.names[0]
    }
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What becomes of mail to local names.
#[derive(Clone, Debug, Default)]
pub struct LocalMail {
    names: LocalNames,
    aliases: Aliases,
    admin: Option<Mailbox>,
}

impl LocalMail {
    /// From `[aliases]` and `admin` alone, without reading `[local] aliases_file`.
    pub fn from_config(config: &Config) -> Result<LocalMail, String> {
        LocalMail::build(config, Vec::new())
    }

    /// Everything, the aliases file included (its entries first, so that `[aliases]`
    /// overrides them); also returns the file's warnings.
    pub fn load(config: &Config) -> Result<(LocalMail, Vec<String>), String> {
        let Some(path) = &config.local.aliases_file else {
            return Ok((LocalMail::from_config(config)?, Vec::new()));
        };
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("local.aliases_file {file}: {e}"))?;
        let (written, warnings) = parse_file(&text, &file)?;
        Ok((LocalMail::build(config, written)?, warnings))
    }

    fn build(config: &Config, mut written: Vec<Written>) -> Result<LocalMail, String> {
        for (name, targets) in &config.aliases {
            let source = format!("aliases.{name}");
            if !is_alias_name(name) {
                return Err(format!("{source}: {name:?} is not a local name"));
            }
            let targets = targets.list();
            if targets.is_empty() {
                return Err(format!("{source}: needs at least one target"));
            }
            for t in &targets {
                check_target(t).map_err(|e| format!("{source}: {e}"))?;
            }
            written.push(Written {
                name: name.clone(),
                targets,
                source,
            });
        }
        let names = LocalNames::from_config(config);
        let aliases = Aliases::flatten(&written, &|d| names.contains(d))?;
        let admin = match &config.admin {
            Some(a) => Some(Mailbox::parse(a).map_err(|e| format!("admin {a:?}: {e}"))?),
            None => None,
        };
        Ok(LocalMail {
            names,
            aliases,
            admin,
        })
    }

    /// `admin`: where double bounces and mail to unaliased local names go.
    pub fn admin(&self) -> Option<&Mailbox> {
        self.admin.as_ref()
    }

    pub fn names(&self) -> &LocalNames {
        &self.names
    }

    /// How many local names have an alias.
    pub(crate) fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// Whether `address` is at one of our names.
    pub(crate) fn is_local(&self, address: &Mailbox) -> bool {
        self.names.contains(address.domain())
    }

    /// `recipients` with every local one replaced by where its mail goes; the others as
    /// they are. A local one with nowhere to go is kept, at our hostname. No address
    /// twice.
    pub(crate) fn resolve(&self, recipients: Vec<Recipient>) -> Vec<Recipient> {
        if !recipients.iter().any(|r| self.is_local(&r.address)) {
            return recipients;
        }
        let mut out: Vec<Recipient> = Vec::with_capacity(recipients.len());
        let push = |r: Recipient, out: &mut Vec<Recipient>| {
            if !out.iter().any(|o| o.address.same_as(&r.address)) {
                out.push(r);
            }
        };
        for r in recipients {
            if !self.is_local(&r.address) {
                push(r, &mut out);
                continue;
            }
            let part = r.address.local_part();
            let unaliased = [Target::Unaliased(part.to_owned())];
            let targets = self.aliases.get(part).unwrap_or(&unaliased);
            for target in targets {
                let address = match (target, &self.admin) {
                    (Target::Address(a), _) => a.clone(),
                    (Target::Unaliased(_), Some(admin)) => admin.clone(),
                    // A name too long to be an address at our hostname stays as it was.
                    (Target::Unaliased(name), None) => {
                        Mailbox::parse(&format!("{name}@{}", self.names.hostname()))
                            .unwrap_or_else(|_| r.address.clone())
                    }
                };
                let same = address.same_as(&r.address);
                let orcpt = match &r.orcpt {
                    Some(o) => Some(o.clone()),
                    None if same => None,
                    None => Some(format!("rfc822;{}", r.address)),
                };
                let address = if same { r.address.clone() } else { address };
                push(
                    Recipient {
                        address,
                        notify: r.notify.clone(),
                        orcpt,
                    },
                    &mut out,
                );
            }
        }
        out
    }
}

/// `LocalMail` shared by the parts that commit mail.
pub type SharedLocalMail = Arc<LocalMail>;

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(extra: &str) -> LocalMail {
        let config = crate::config::parse(
            &format!("spool = \"/s\"\nhostname = \"laptop.lan\"\n{extra}"),
            std::path::Path::new("/etc/f.toml"),
        )
        .unwrap();
        LocalMail::from_config(&config).unwrap()
    }

    fn addresses(r: &[Recipient]) -> Vec<(String, Option<&str>)> {
        r.iter()
            .map(|r| (r.address.to_string(), r.orcpt.as_deref()))
            .collect()
    }

    fn to(addresses: &[&str]) -> Vec<Recipient> {
        addresses
            .iter()
            .map(|a| Recipient::parse(a).unwrap())
            .collect()
    }

    #[test]
    fn local_names_go_by_alias_then_admin() {
        let m = mail(
            "admin = \"me@example.org\"\n[local]\nnames = [\"box\"]\n\
             [aliases]\nroot = \"me@example.org\"\nbackup = [\"ops@example.org\", \"root\"]\n",
        );
        let out = m.resolve(to(&[
            "root@laptop.lan",
            "backup@LOCALHOST",
            "alice@Box",
            "friend@example.net",
        ]));
        assert_eq!(
            addresses(&out),
            [
                ("me@example.org".into(), Some("rfc822;root@laptop.lan")),
                ("ops@example.org".into(), Some("rfc822;backup@LOCALHOST")),
                ("friend@example.net".into(), None),
            ],
            "alice goes to the admin, who is there already"
        );
    }

    #[test]
    fn without_admin_or_alias_local_mail_is_kept() {
        let m = mail("[aliases]\npostmaster = \"root\"\n");
        let out = m.resolve(to(&["root@laptop.lan", "postmaster@localhost"]));
        assert_eq!(addresses(&out), [("root@laptop.lan".into(), None)]);
        assert!(m.is_local(&out[0].address));
    }

    #[test]
    fn a_loop_in_the_configuration_is_an_error() {
        let config = crate::config::parse(
            "spool = \"/s\"\nhostname = \"h\"\n[aliases]\na = \"b\"\nb = \"a@h\"\n",
            std::path::Path::new("/etc/f.toml"),
        )
        .unwrap();
        let e = LocalMail::from_config(&config).unwrap_err();
        assert!(e.contains("alias loop: a -> b -> a"), "{e}");
    }
}
