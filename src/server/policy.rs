//! Who may send mail where (README, "Configuration" `[accept]`): anyone may send to our local domains
//! and to domains a `hold = true` route keeps for an edge; relaying anywhere else needs a
//! client address in `relay_networks` or an authenticated session. We route on the final
//! domain only, but a local part carrying `%`, `!` or `@` is a relay attempt all the same
//! (some MTA further on may honour it): such recipients, even at our own domains, are for
//! clients who may relay, as Postfix does.

use std::net::IpAddr;

use crate::config::{Config, IpNet, domain_matches};
use crate::smtp::Mailbox;

#[derive(Clone, Debug)]
pub struct RelayPolicy {
    relay_networks: Vec<IpNet>,
    /// Domain patterns, as `config::domain_matches` reads them.
    accepted_domains: Vec<String>,
}

impl RelayPolicy {
    pub fn from_config(config: &Config) -> RelayPolicy {
        let mut accepted = config.accept.local_domains.clone();
        let held = |r: &&crate::config::Route| {
            r.hold || r.via == crate::config::ODMR_VIA || r.via == crate::config::BUNDLE_VIA
        };
        for route in config.route.iter().filter(held) {
            accepted.extend(route.domains.iter().cloned());
        }
        RelayPolicy {
            relay_networks: config.accept.relay_networks.clone(),
            accepted_domains: accepted,
        }
    }

    /// Accepts mail for exactly `domains`, and relays for nobody: a station serving its
    /// hub after an ODMR turn.
    pub fn only(domains: Vec<String>) -> RelayPolicy {
        RelayPolicy {
            relay_networks: Vec::new(),
            accepted_domains: domains,
        }
    }

    /// The client may relay to any domain.
    pub(crate) fn may_relay(&self, client: IpAddr, authenticated: bool) -> bool {
        authenticated || self.relay_networks.iter().any(|net| net.contains(client))
    }

    /// Anyone may send to this domain: it is ours, or held here for an edge.
    fn accepts_for(&self, domain: &str) -> bool {
        self.accepted_domains
            .iter()
            .any(|pattern| domain_matches(pattern, domain))
    }

    pub fn allows(&self, client: IpAddr, authenticated: bool, rcpt: &Mailbox) -> bool {
        if self.may_relay(client, authenticated) {
            return true;
        }
        self.accepts_for(rcpt.domain()) && !has_routing_characters(rcpt.local_part())
    }
}

/// `%` (the percent hack), `!` (UUCP bang paths) or `@` (quoted): a route, not a mailbox.
fn has_routing_characters(local_part: &str) -> bool {
    local_part.contains(['%', '!', '@'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let config = crate::config::parse(
            "spool = \"/s\"\n[accept]\nlocal_domains = [\"ours.example\"]\nrelay_networks = [\"10.0.0.0/8\"]\n[[route]]\ndomains = [\".field.example\"]\nhold = true\n",
            std::path::Path::new("/etc/f.toml"),
        )
        .unwrap();
        let p = RelayPolicy::from_config(&config);
        let outside: IpAddr = "192.0.2.9".parse().unwrap();
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        let m = |s: &str| Mailbox::parse(s).unwrap();
        assert!(p.allows(outside, false, &m("a@OURS.example")));
        assert!(p.allows(outside, false, &m("\"john doe\"@ours.example")));
        assert!(p.allows(outside, false, &m("a@b.field.example")));
        assert!(!p.allows(outside, false, &m("a@field.example")));
        assert!(!p.allows(outside, false, &m("a@victim.example")));
        assert!(!p.allows(outside, false, &m("a@[192.0.2.1]")));
        for routed in [
            "a%victim.example@ours.example",
            "victim.example!a@ours.example",
            "\"a@victim.example\"@ours.example",
        ] {
            assert!(!p.allows(outside, false, &m(routed)), "{routed}");
            assert!(p.allows(outside, true, &m(routed)), "{routed}");
        }
        assert!(p.allows(outside, true, &m("a@victim.example")));
        assert!(p.allows(inside, false, &m("a@victim.example")));
    }
}
