//! Sender rewriting for smarthost accounts (what msmtp's `from` and Postfix's
//! smtp_generic_maps do): a route's `rewrite` maps local senders to the account's
//! address. Decided once, when the message is committed, so that a DKIM signature made
//! then covers the `From:` that leaves and every retry sends the same bytes. One
//! envelope serves every recipient: the sender is rewritten only when every route the
//! message takes says the same (a route without `rewrite` says "as it is"). Mail from
//! local programs and authenticated clients only, unless the route's `relayed` asks for
//! relayed mail too; the null sender never.

use std::sync::Arc;

use super::local::LocalNames;
use crate::config::{Config, KeepOriginal, Rewrite, domain_matches};
use crate::smtp::{Mailbox, ReversePath};
use crate::spool::{Origin, OriginKind};

/// Which senders a key takes, most exact first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pattern {
    /// `name@domain`.
    Address(String),
    /// `name`, at any local name.
    Name(String),
    /// `@domain`.
    Domain(String),
    /// `*`: anyone at a local name.
    AnyLocal,
}

/// One route's rewriting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderRewrite {
    rules: Vec<(Pattern, Mailbox)>,
    pub from_header: bool,
    pub keep_original: KeepOriginal,
    relayed: bool,
}

impl SenderRewrite {
    /// The rules of `config`; a target that is no address is left out (`from_config`
    /// refuses such a configuration first).
    pub fn new(config: &Rewrite) -> SenderRewrite {
        let mut rules: Vec<(Pattern, Mailbox)> = config
            .senders
            .iter()
            .filter_map(|(key, to)| Some((pattern(key), Mailbox::parse(to).ok()?)))
            .collect();
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        SenderRewrite {
            rules,
            from_header: config.from_header,
            keep_original: config.keep_original,
            relayed: config.relayed,
        }
    }

    /// The address `sender` becomes, if a key takes it.
    pub(crate) fn address_for(&self, sender: &str, local: &LocalNames) -> Option<&Mailbox> {
        let (name, domain) = sender.rsplit_once('@')?;
        let is_local = local.contains(domain);
        self.rules
            .iter()
            .find(|(p, _)| match p {
                Pattern::Address(a) => a.eq_ignore_ascii_case(sender),
                Pattern::Name(n) => is_local && n.eq_ignore_ascii_case(name),
                Pattern::Domain(d) => domain_matches(d, domain),
                Pattern::AnyLocal => is_local,
            })
            .map(|(_, to)| to)
    }

    /// Whether mail of `origin` is ours to rewrite.
    fn applies_to(&self, origin: &Origin) -> bool {
        origin.kind == OriginKind::Local
            || origin.auth.is_some()
            || (self.relayed && origin.kind == OriginKind::Smtp)
    }
}

fn pattern(key: &str) -> Pattern {
    if key == "*" {
        Pattern::AnyLocal
    } else if let Some(domain) = key.strip_prefix('@') {
        Pattern::Domain(domain.to_owned())
    } else if key.contains('@') {
        Pattern::Address(key.to_owned())
    } else {
        Pattern::Name(key.to_owned())
    }
}

/// A key as the configuration may write it.
fn check_key(key: &str) -> Result<(), String> {
    let ok = match pattern(key) {
        Pattern::AnyLocal => true,
        Pattern::Domain(d) => crate::smtp::domain::is_domain(d.trim_start_matches('.')),
        Pattern::Address(a) => crate::smtp::Mailbox::parse(&a).is_ok(),
        Pattern::Name(n) => super::aliases::is_alias_name(&n),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{key:?}: use name, name@domain, @domain or *"))
    }
}

/// Each route's rewriting, found by recipient domain as the router finds routes: the
/// `[[route]]` entries in order, then `[upstream]` (no rewriting for direct MX).
#[derive(Clone, Debug, Default)]
pub struct RouteRewrites {
    routes: Vec<(Vec<String>, Option<Arc<SenderRewrite>>)>,
    fallback: Option<Arc<SenderRewrite>>,
}

impl RouteRewrites {
    /// Each route's rewriting; an error names a key of a form no sender has.
    pub fn from_config(config: &Config) -> Result<RouteRewrites, String> {
        let all = config
            .upstream
            .iter()
            .map(|u| ("upstream.rewrite".to_owned(), &u.rewrite))
            .chain(
                config
                    .route
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("route[{i}].rewrite"), &r.rewrite)),
            );
        for (path, rewrite) in all {
            for (key, to) in rewrite.iter().flat_map(|r| &r.senders) {
                check_key(key).map_err(|e| format!("{path}.senders: {e}"))?;
                if Mailbox::parse(to).is_err() {
                    return Err(format!(
                        "{path}.senders: {key:?} = {to:?}: not a mail address"
                    ));
                }
            }
        }
        let make = |r: &Option<Rewrite>| r.as_ref().map(|r| Arc::new(SenderRewrite::new(r)));
        Ok(RouteRewrites {
            routes: config
                .route
                .iter()
                .map(|r| (r.domains.clone(), make(&r.rewrite)))
                .collect(),
            fallback: config.upstream.as_ref().and_then(|u| make(&u.rewrite)),
        })
    }

    fn for_domain(&self, domain: &str) -> Option<&Arc<SenderRewrite>> {
        self.routes
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| domain_matches(p, domain)))
            .map_or(self.fallback.as_ref(), |(_, r)| r.as_ref())
    }

    /// What `sender` becomes for mail of `origin` to `domains` (the recipients' domains
    /// that leave this host): `Some` only when every route the mail takes rewrites it
    /// to the same address, with the rewriting that decided it.
    pub(crate) fn decide<'a>(
        &'a self,
        sender: &ReversePath,
        origin: &Origin,
        domains: &[&str],
        local: &LocalNames,
    ) -> Option<(Mailbox, &'a SenderRewrite)> {
        let sender = sender.mailbox()?.to_string();
        if domains.is_empty() {
            return None;
        }
        let mut agreed: Option<(&Mailbox, &SenderRewrite)> = None;
        for domain in domains {
            let rewrite = self.for_domain(domain)?;
            if !rewrite.applies_to(origin) {
                return None;
            }
            let to = rewrite.address_for(&sender, local)?;
            match agreed {
                Some((a, _)) if !a.same_as(to) => return None,
                Some(_) => {}
                None => agreed = Some((to, rewrite)),
            }
        }
        agreed.map(|(to, rewrite)| (to.clone(), rewrite))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrites(extra: &str) -> (RouteRewrites, LocalNames) {
        let config = crate::config::parse(
            &format!("spool = \"/s\"\nhostname = \"laptop\"\n{extra}"),
            std::path::Path::new("/etc/f.toml"),
        )
        .unwrap();
        (
            RouteRewrites::from_config(&config).unwrap(),
            LocalNames::from_config(&config),
        )
    }

    fn local() -> Origin {
        Origin {
            kind: OriginKind::Local,
            ..Origin::default()
        }
    }

    #[test]
    fn the_most_exact_key_wins() {
        let (r, names) = rewrites(
            "[upstream]\nsmarthost = \"s.example:587\"\n[upstream.rewrite]\n\
             senders = { \"*\" = \"me@example.org\", backup = \"backups@example.org\", \
             \"root@localhost\" = \"admin@example.org\", \"@lan.example\" = \"lan@example.org\" }\n",
        );
        let d = |sender: &str| {
            let sender = ReversePath::parse(sender).unwrap();
            r.decide(&sender, &local(), &["far.example"], &names)
                .map(|x| x.0.to_string())
        };
        assert_eq!(d("alice@laptop").as_deref(), Some("me@example.org"));
        assert_eq!(d("backup@LAPTOP").as_deref(), Some("backups@example.org"));
        assert_eq!(d("root@localhost").as_deref(), Some("admin@example.org"));
        assert_eq!(d("x@lan.example").as_deref(), Some("lan@example.org"));
        assert_eq!(d("someone@elsewhere.example"), None, "not ours");
        assert_eq!(d(""), None, "the null sender stays");
    }

    #[test]
    fn relayed_mail_and_disagreeing_routes_keep_their_sender() {
        let (r, names) = rewrites(
            "[upstream]\nsmarthost = \"s.example:587\"\n[upstream.rewrite]\nsenders = { \"*\" = \"me@example.org\" }\n\
             [[route]]\ndomains = [\"lan.example\"]\nvia = \"10.0.0.2:25\"\n",
        );
        let laptop = ReversePath::parse("a@laptop").unwrap();
        let relayed = Origin {
            kind: OriginKind::Smtp,
            client: Some("10.0.0.9".into()),
            ..Origin::default()
        };
        assert!(
            r.decide(&laptop, &relayed, &["far.example"], &names)
                .is_none()
        );
        let auth = Origin {
            auth: Some("a".into()),
            ..relayed
        };
        assert!(r.decide(&laptop, &auth, &["far.example"], &names).is_some());
        assert!(
            r.decide(&laptop, &local(), &["far.example", "lan.example"], &names)
                .is_none(),
            "the LAN route does not rewrite"
        );
        assert!(check_key("*").is_ok() && check_key("@x.example").is_ok());
        assert!(check_key("a b").is_err());
    }
}
