//! Which way a recipient's mail goes (README, "Delivering mail"): `[[route]]` entries by domain, first
//! match wins; then `[upstream]` (the smarthost); else the domain's MX. A `hold` route
//! keeps its mail until ETRN or a flush names the domain, then delivers it to its target
//! like any other route; a `via = "odmr"` route keeps it until its station collects it
//! (RFC 2645). Each route has a stable name (its `name`, else its first domain;
//! `upstream`, `mx`) used to group deliveries and to key its link gate, and its link
//! settings: `[link]` with its own over them. Mail to our own names (`LocalNames`) takes
//! no route: it is resolved before it is committed, and what is left of it stays here.

use crate::config::{BUNDLE_VIA, Config, Link, ODMR_VIA, TlsPolicy, domain_matches, mx_port};
use crate::identity::LocalNames;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A fixed `host:port` (a smarthost or a route's `via`).
    Relay {
        host_port: String,
        tls: TlsPolicy,
        authenticated: bool,
    },
    /// The recipient domain's MX hosts (RFC 5321 §5.1), on `port` (25 unless `mx:PORT`).
    Mx { tls: TlsPolicy, port: u16 },
    /// No connection of ours: the station collects it over ODMR (RFC 2645, `via =
    /// "odmr"`); held until then.
    Odmr,
    /// No connection of ours: the mail leaves in bundle files (`via = "bundle"`,
    /// `ferrymail bundle export`); held until then.
    Bundle,
}

impl Target {
    /// Mail for it is carried by something else than our own connection (an ODMR
    /// station, a bundle): it is held, and no runner is ever started for it.
    fn is_collected(&self) -> bool {
        matches!(self, Target::Odmr | Target::Bundle)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub target: Target,
    /// Keep the mail until a flush or ETRN names its domain.
    pub hold: bool,
    /// When its gate may open and how its link is watched.
    pub link: Link,
    /// Its upstream is a ferrymail node: XFERRY is used where offered.
    pub ferry: bool,
}

#[derive(Clone, Debug)]
pub struct Router {
    routes: Vec<(Vec<String>, Route)>,
    fallback: Route,
    local: LocalNames,
}

impl Router {
    pub fn from_config(config: &Config) -> Router {
        let mut taken: Vec<String> = vec!["upstream".into(), "mx".into(), "local".into()];
        taken.extend(config.route.iter().filter_map(|r| r.name.clone()));
        let routes = config
            .route
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = r.name.clone().unwrap_or_else(|| {
                    let first = r.domains[0].trim_start_matches('.').to_ascii_lowercase();
                    let name = if taken.iter().any(|t| t.eq_ignore_ascii_case(&first)) {
                        format!("route[{i}]")
                    } else {
                        first
                    };
                    taken.push(name.clone());
                    name
                });
                let target = if let Some(port) = mx_port(&r.via) {
                    Target::Mx { tls: r.tls, port }
                } else if r.via == ODMR_VIA {
                    Target::Odmr
                } else if r.via == BUNDLE_VIA {
                    Target::Bundle
                } else {
                    Target::Relay {
                        host_port: r.via.clone(),
                        tls: r.tls,
                        authenticated: false,
                    }
                };
                (
                    r.domains.clone(),
                    Route {
                        name,
                        hold: r.hold || target.is_collected(),
                        target,
                        ferry: r.ferry,
                        link: config.link.for_route(r.link.as_ref(), false),
                    },
                )
            })
            .collect();
        let fallback = match &config.upstream {
            Some(up) => Route {
                name: "upstream".into(),
                hold: false,
                ferry: up.ferry,
                link: config.link.for_route(up.link.as_ref(), true),
                target: Target::Relay {
                    host_port: up.smarthost.clone(),
                    tls: up.tls,
                    authenticated: up.username.is_some(),
                },
            },
            None => Route {
                name: "mx".into(),
                hold: false,
                ferry: false,
                link: config.link.for_route(None, false),
                target: Target::Mx {
                    tls: TlsPolicy::Opportunistic,
                    port: 25,
                },
            },
        };
        Router {
            routes,
            fallback,
            local: LocalNames::from_config(config),
        }
    }

    /// Whether `domain` is one of this host's own names.
    pub(crate) fn is_local(&self, domain: &str) -> bool {
        self.local.contains(domain)
    }

    /// Every route, the fallback last.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .map(|(_, r)| r)
            .chain(std::iter::once(&self.fallback))
    }

    /// The route called `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Route> {
        self.routes().find(|r| r.name == name)
    }

    /// The route for mail to `domain`.
    pub fn route(&self, domain: &str) -> &Route {
        self.routes
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| domain_matches(p, domain)))
            .map_or(&self.fallback, |(_, route)| route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(text: &str) -> Router {
        Router::from_config(
            &crate::config::parse(text, std::path::Path::new("/etc/f.toml")).unwrap(),
        )
    }

    #[test]
    fn first_match_then_upstream_then_mx() {
        let r = router(
            "spool = \"/s\"\n[upstream]\nsmarthost = \"smtp.example.net:587\"\nusername = \"me\"\npassword_file = \"p\"\n\
             [[route]]\ndomains = [\"field.example.org\", \".field.example.org\"]\nhold = true\n\
             [[route]]\ndomains = [\".example.org\"]\nvia = \"10.0.0.2:25\"\ntls = \"none\"\n\
             [[route]]\ndomains = [\"direct.example\"]\n\
             [[route]]\ndomains = [\"test\"]\nvia = \"mx:2525\"\n",
        );
        assert!(r.route("field.example.org").hold);
        assert_eq!(
            r.route("field.example.org").target,
            Target::Mx {
                tls: TlsPolicy::Opportunistic,
                port: 25
            }
        );
        assert_eq!(r.route("A.Field.Example.Org.").name, "field.example.org");
        assert_eq!(r.route("other.example.org").name, "example.org");
        assert_eq!(
            r.route("other.example.org").target,
            Target::Relay {
                host_port: "10.0.0.2:25".into(),
                tls: TlsPolicy::None,
                authenticated: false
            }
        );
        assert_eq!(
            r.route("example.org").name,
            "upstream",
            ".suffix matches subdomains only"
        );
        assert_eq!(
            r.route("direct.example").target,
            Target::Mx {
                tls: TlsPolicy::Opportunistic,
                port: 25
            }
        );
        assert_eq!(
            r.route("test").target,
            Target::Mx {
                tls: TlsPolicy::Opportunistic,
                port: 2525
            }
        );
        let up = r.route("anything.example");
        assert_eq!(up.name, "upstream");
        assert!(matches!(
            &up.target,
            Target::Relay {
                authenticated: true,
                tls: TlsPolicy::Required,
                ..
            }
        ));
        let direct = router("spool = \"/s\"\n");
        assert_eq!(direct.route("x.example").name, "mx");
    }
}
