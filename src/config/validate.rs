//! Checks that serde cannot express: cross-field rules, host:port and domain syntax,
//! schedule windows. Each failure is `(key path, message)` for a one-line error.

use std::time::Duration;

use super::schema::{Config, ListenKind, RouteLink, TlsPolicy};
use crate::smtp::domain::is_domain;

type Fault = (String, String);

pub fn validate(c: &Config) -> Result<(), Fault> {
    names(c)?;
    listeners(c)?;
    accept(c)?;
    upstream(c)?;
    route_targets(c)?;
    link(c)?;
    route_links_and_names(c)?;
    rewrites(c)?;
    dkim(c)?;
    odmr_users(c)?;
    bundles(c)?;
    timers(c)
}

fn fault(path: &str, msg: &str) -> Result<(), Fault> {
    Err((path.to_owned(), msg.to_owned()))
}

/// The host name, the admin address and the local names.
fn names(c: &Config) -> Result<(), Fault> {
    if !is_domain(&c.hostname) {
        return fault(
            "hostname",
            &format!("{:?} is not a valid host name", c.hostname),
        );
    }
    if let Some(admin) = &c.admin
        && crate::smtp::Mailbox::parse(admin).is_err()
    {
        return fault("admin", &format!("{admin:?} is not a mail address"));
    }
    for (i, name) in c.local.names.iter().enumerate() {
        if !is_domain(name) {
            return fault(
                &format!("local.names[{i}]"),
                &format!("{name:?} is not a domain"),
            );
        }
    }
    Ok(())
}

/// `[[listen]]`: at least one; TLS and AUTH where a kind needs them.
fn listeners(c: &Config) -> Result<(), Fault> {
    if c.listen.is_empty() {
        return fault("listen", "at least one [[listen]] entry is needed");
    }
    for (i, l) in c.listen.iter().enumerate() {
        let needs_tls = match l.kind {
            ListenKind::Smtp => false,
            ListenKind::Odmr => l.require_tls,
            ListenKind::Submission | ListenKind::Smtps => true,
        };
        if needs_tls && c.tls.is_none() {
            return fault(
                &format!("listen[{i}].kind"),
                &format!(
                    "\"{}\" needs a [tls] section with cert and key",
                    l.kind.as_str()
                ),
            );
        }
        if l.kind == ListenKind::Submission && c.accept.users.is_none() {
            return fault(
                &format!("listen[{i}].kind"),
                "\"submission\" requires AUTH: set accept.users",
            );
        }
    }
    Ok(())
}

/// `[accept]`: limits of at least one, and its local domains.
fn accept(c: &Config) -> Result<(), Fault> {
    if c.accept.max_message_size.0 < 1024 {
        return fault("accept.max_message_size", "must be at least 1KiB");
    }
    if c.accept.max_recipients == 0 {
        return fault("accept.max_recipients", "must be at least 1");
    }
    if c.accept.max_connections == 0 || c.accept.max_connections_per_client == 0 {
        return fault(
            "accept.max_connections",
            "connection caps must be at least 1",
        );
    }
    if c.accept.reserved_connections >= c.accept.max_connections {
        return fault(
            "accept.reserved_connections",
            "must leave some of accept.max_connections for other clients",
        );
    }
    if c.accept.command_timeout.0.as_secs() == 0 || c.accept.session_timeout.0.as_secs() == 0 {
        return fault("accept.command_timeout", "timeouts must be at least 1s");
    }
    for (i, d) in c.accept.local_domains.iter().enumerate() {
        if !is_domain(d) {
            return fault(
                &format!("accept.local_domains[{i}]"),
                &format!("{d:?} is not a domain"),
            );
        }
    }
    Ok(())
}

/// `[upstream]`: host:port, and a password only over TLS.
fn upstream(c: &Config) -> Result<(), Fault> {
    if let Some(up) = &c.upstream {
        if !is_host_port(&up.smarthost) {
            return fault(
                "upstream.smarthost",
                &format!("{:?} is not host:port", up.smarthost),
            );
        }
        if up.password_file.is_some() != up.username.is_some() {
            return fault("upstream", "username and password_file go together");
        }
        if up.username.is_some() && up.tls == TlsPolicy::None {
            return fault(
                "upstream.tls",
                "\"none\" would send the password in clear; use required or implicit",
            );
        }
    }
    Ok(())
}

/// Each `[[route]]`'s domains and where it delivers.
fn route_targets(c: &Config) -> Result<(), Fault> {
    for (i, r) in c.route.iter().enumerate() {
        if r.domains.is_empty() {
            return fault(
                &format!("route[{i}].domains"),
                "must name at least one domain",
            );
        }
        for (j, d) in r.domains.iter().enumerate() {
            if !is_domain(d.strip_prefix('.').unwrap_or(d)) {
                return fault(
                    &format!("route[{i}].domains[{j}]"),
                    &format!("{d:?} is not a domain or .suffix"),
                );
            }
        }
        if mx_port(&r.via).is_none()
            && r.via != ODMR_VIA
            && r.via != BUNDLE_VIA
            && !is_host_port(&r.via)
        {
            return fault(
                &format!("route[{i}].via"),
                &format!(
                    "{:?} is neither \"mx\", \"mx:PORT\", \"odmr\", \"bundle\" nor host:port",
                    r.via
                ),
            );
        }
    }
    Ok(())
}

/// `[link]`, and the smarthost's own link settings.
fn link(c: &Config) -> Result<(), Fault> {
    link_settings(
        "link",
        &c.link.windows,
        &c.link.etrn,
        c.link.probe_interval.0,
    )?;
    if !c.link.etrn.is_empty() && c.upstream.is_none() {
        return fault(
            "link.etrn",
            "ETRN goes to the smarthost: set [upstream], or give a route its own [route.link] etrn",
        );
    }
    if let Some(own) = c.upstream.as_ref().and_then(|u| u.link.as_ref()) {
        route_link("upstream.link", own, true)?;
    }
    Ok(())
}

/// Each route's own link settings, and route names that are unique.
fn route_links_and_names(c: &Config) -> Result<(), Fault> {
    // `local` is the lane of mail kept for our own names.
    let mut names: Vec<String> = vec!["upstream".into(), "mx".into(), "local".into()];
    for (i, r) in c.route.iter().enumerate() {
        if let Some(own) = &r.link {
            route_link(&format!("route[{i}].link"), own, mx_port(&r.via).is_none())?;
        }
        if let Some(name) = &r.name {
            if !is_route_name(name) {
                return fault(
                    &format!("route[{i}].name"),
                    &format!("{name:?}: use 1-64 letters, digits, '.', '_' or '-'"),
                );
            }
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                return fault(
                    &format!("route[{i}].name"),
                    &format!("{name:?} names another route already"),
                );
            }
            names.push(name.clone());
        }
    }
    Ok(())
}

/// Each sender rewriting of the smarthost and the routes.
fn rewrites(c: &Config) -> Result<(), Fault> {
    let rewrites = c
        .upstream
        .iter()
        .map(|u| ("upstream.rewrite".to_owned(), &u.rewrite))
        .chain(
            c.route
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("route[{i}].rewrite"), &r.rewrite)),
        );
    for (path, rewrite) in rewrites {
        if let Some(rewrite) = rewrite {
            rewrite_rules(&path, rewrite)?;
        }
    }
    Ok(())
}

/// `[[dkim]]`: its domains and selectors.
fn dkim(c: &Config) -> Result<(), Fault> {
    for (i, d) in c.dkim.iter().enumerate() {
        if !is_domain(&d.domain) {
            return fault(
                &format!("dkim[{i}].domain"),
                &format!("{:?} is not a domain", d.domain),
            );
        }
        if !is_domain(&d.selector) {
            return fault(
                &format!("dkim[{i}].selector"),
                &format!("{:?}: use letters, digits, '-' and '.'", d.selector),
            );
        }
    }
    Ok(())
}

/// `[etrn]` and `[retry]` times.
fn timers(c: &Config) -> Result<(), Fault> {
    if c.etrn.open_for.0.as_secs() == 0 {
        return fault("etrn.open_for", "must be at least 1s");
    }
    if c.retry.initial.0.is_zero() {
        return fault("retry.initial", "must be more than 0s");
    }
    if c.retry.initial > c.retry.max {
        return fault("retry.initial", "is longer than retry.max");
    }
    Ok(())
}

/// A route's own link settings: checked like `[link]`'s; ETRN only over a relay.
fn route_link(path: &str, own: &RouteLink, relay: bool) -> Result<(), Fault> {
    let interval = own.probe_interval.map_or(Duration::from_secs(1), |p| p.0);
    let windows = own.windows.clone().unwrap_or_default();
    let etrn = own.etrn.clone().unwrap_or_default();
    link_settings(path, &windows, &etrn, interval)?;
    if !etrn.is_empty() && !relay {
        return Err((
            format!("{path}.etrn"),
            "ETRN goes to a relay host: this route delivers to MX".into(),
        ));
    }
    Ok(())
}

/// Windows, ETRN domains and the probe interval of `[link]` or a route's own.
fn link_settings(
    path: &str,
    windows: &[String],
    etrn: &[String],
    probe_interval: Duration,
) -> Result<(), Fault> {
    for (i, w) in windows.iter().enumerate() {
        if parse_window(w).is_none() {
            return Err((
                format!("{path}.windows[{i}]"),
                format!("{w:?} is not \"HH:MM-HH:MM\""),
            ));
        }
    }
    for (i, d) in etrn.iter().enumerate() {
        if !is_domain(d) {
            return Err((
                format!("{path}.etrn[{i}]"),
                format!("{d:?} is not a domain"),
            ));
        }
    }
    if probe_interval.as_secs() == 0 {
        return Err((
            format!("{path}.probe_interval"),
            "must be at least 1s".into(),
        ));
    }
    Ok(())
}

/// A route name as logs, lane keys and `status` use it: no spaces, nothing to escape.
fn is_route_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A window `HH:MM-HH:MM` as minutes after midnight `(start, end)`; may cross midnight.
pub(crate) fn parse_window(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (start, end) = (minutes(a)?, minutes(b)?);
    (start != end).then_some((start, end))
}

/// `via` of a route whose mail only an ODMR turn takes (RFC 2645).
pub const ODMR_VIA: &str = "odmr";
/// `via` of a route whose mail leaves only in bundles (`ferrymail bundle export`).
pub const BUNDLE_VIA: &str = "bundle";

/// `[bundle]` and `[[bundle_peer]]`: names that are names, one entry per peer, a
/// route in at most one peer, and times that make sense.
fn bundles(c: &Config) -> Result<(), Fault> {
    if !is_domain(&c.bundle.node) {
        return fault(
            "bundle.node",
            &format!("{:?}: use letters, digits, '-' and '.'", c.bundle.node),
        );
    }
    if c.bundle.resend_after.0.as_secs() < 60 {
        return fault("bundle.resend_after", "must be at least 1m");
    }
    let max_age = c.bundle.max_age.0.as_secs();
    if !(3600..=crate::spool::bundles::IMPORT_MEMORY_SECS).contains(&max_age) {
        return fault("bundle.max_age", "must be between 1h and 90d");
    }
    for (i, p) in c.bundle_peer.iter().enumerate() {
        let path = format!("bundle_peer[{i}]");
        if !is_domain(&p.node) {
            return fault(
                &format!("{path}.node"),
                &format!("{:?}: use letters, digits, '-' and '.'", p.node),
            );
        }
        if p.node.eq_ignore_ascii_case(&c.bundle.node) {
            return fault(&format!("{path}.node"), "is this node's own name");
        }
        if c.bundle_peer[..i]
            .iter()
            .any(|q| q.node.eq_ignore_ascii_case(&p.node))
        {
            return fault(
                &format!("{path}.node"),
                &format!("{:?} is named twice", p.node),
            );
        }
        for r in &p.routes {
            if c.bundle_peer[..i].iter().any(|q| q.routes.contains(r)) {
                return fault(
                    &format!("{path}.routes"),
                    &format!("route {r:?} is already another peer's"),
                );
            }
        }
    }
    Ok(())
}

/// `[[odmr_user]]`: unique names, and domains that `via = "odmr"` routes hold; an
/// `odmr` listener needs users, and TLS unless it says otherwise.
fn odmr_users(c: &Config) -> Result<(), Fault> {
    let odmr_routes: Vec<&String> = c
        .route
        .iter()
        .filter(|r| r.via == ODMR_VIA)
        .flat_map(|r| &r.domains)
        .collect();
    let held = |pattern: &str| {
        odmr_routes.iter().any(|r| {
            r.eq_ignore_ascii_case(pattern)
                || match pattern.strip_prefix('.') {
                    None => domain_matches(r, pattern),
                    Some(suffix) => {
                        domain_matches(r, &format!("x.{suffix}"))
                            && r.starts_with('.')
                            && suffix.len() >= r.len() - 1
                    }
                }
        })
    };
    let mut names = Vec::new();
    for (i, u) in c.odmr_user.iter().enumerate() {
        let path = format!("odmr_user[{i}]");
        if u.name.is_empty() || u.name.chars().any(|ch| ch.is_control() || ch == ' ') {
            return Err((
                format!("{path}.name"),
                format!("{:?}: no spaces or control characters", u.name),
            ));
        }
        if names.contains(&&u.name) {
            return Err((
                format!("{path}.name"),
                format!("{:?} is named twice", u.name),
            ));
        }
        names.push(&u.name);
        if u.domains.is_empty() {
            return Err((format!("{path}.domains"), "name at least one domain".into()));
        }
        for d in &u.domains {
            if !is_domain(d.strip_prefix('.').unwrap_or(d)) {
                return Err((
                    format!("{path}.domains"),
                    format!("{d:?} is not a domain or .suffix"),
                ));
            }
            if !held(d) {
                return Err((
                    format!("{path}.domains"),
                    format!(
                        "{d:?} is on no [[route]] with via = \"odmr\": its mail would not wait for the station"
                    ),
                ));
            }
        }
    }
    if let Some(o) = &c.odmr {
        if !is_host_port(&o.hub) {
            return Err(("odmr.hub".into(), format!("{:?} is not host:port", o.hub)));
        }
        if o.domains.is_empty() {
            return Err((
                "odmr.domains".into(),
                "name the domains to collect: only their mail is taken from the hub".into(),
            ));
        }
        if let Some(d) = o.domains.iter().find(|d| !is_domain(d)) {
            return Err(("odmr.domains".into(), format!("{d:?} is not a domain")));
        }
        let known = o.route == "upstream" && c.upstream.is_some()
            || o.route == "mx" && c.upstream.is_none()
            || c.route
                .iter()
                .any(|r| r.name.as_deref() == Some(o.route.as_str()));
        if !known {
            return Err((
                "odmr.route".into(),
                format!(
                    "{:?} names no route (upstream, mx, or a [[route]] name)",
                    o.route
                ),
            ));
        }
    }
    for (i, l) in c.listen.iter().enumerate() {
        if l.kind == ListenKind::Odmr && c.odmr_user.is_empty() {
            return Err((
                format!("listen[{i}].kind"),
                "\"odmr\" needs [[odmr_user]] entries".into(),
            ));
        }
    }
    Ok(())
}

/// What serde cannot check of a route's `rewrite` (the keys' forms are checked with
/// the rest of the sending identity, identity::rewrite).
fn rewrite_rules(path: &str, rewrite: &super::schema::Rewrite) -> Result<(), Fault> {
    if rewrite.senders.is_empty() {
        return Err((format!("{path}.senders"), "name at least one sender".into()));
    }
    for (key, to) in &rewrite.senders {
        if crate::smtp::Mailbox::parse(to).is_err() {
            return Err((
                format!("{path}.senders"),
                format!("{key:?} = {to:?}: not a mail address"),
            ));
        }
    }
    Ok(())
}

/// A domain pattern as routes and local domains write it: `example.org` is that domain,
/// `.example.org` every subdomain (not the domain itself). Case and a final dot ignored.
pub(crate) fn domain_matches(pattern: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix('.') {
        Some(suffix) => domain.len() > suffix.len() + 1 && domain.ends_with(&pattern),
        None => domain == pattern,
    }
}

/// A route's `via` that asks for MX delivery: `"mx"` (port 25, RFC 5321 §2.3.5) or
/// `"mx:PORT"` (the domain's MX hosts on another port, as Postfix's `relayhost =
/// domain:port`); `None` for anything else.
pub(crate) fn mx_port(via: &str) -> Option<u16> {
    match via.strip_prefix("mx") {
        Some("") => Some(25),
        Some(rest) => rest.strip_prefix(':')?.parse().ok().filter(|p| *p != 0),
        None => None,
    }
}

fn is_host_port(s: &str) -> bool {
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return addr.port() != 0;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => is_domain(host) && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("02:00-05:00"), Some((120, 300)));
        assert_eq!(parse_window("22:30-01:15"), Some((1350, 75)));
        for bad in [
            "2:00-05:00",
            "02:00",
            "24:00-01:00",
            "02:00-02:00",
            "02:60-03:00",
        ] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }

    #[test]
    fn domain_patterns() {
        assert!(domain_matches("example.org", "Example.ORG."));
        assert!(!domain_matches("example.org", "a.example.org"));
        assert!(domain_matches(".example.org", "a.example.org"));
        assert!(domain_matches(".example.org", "b.a.example.org"));
        assert!(!domain_matches(".example.org", "example.org"));
        assert!(!domain_matches(".example.org", "badexample.org"));
    }

    #[test]
    fn hosts() {
        assert!(is_host_port("smtp.example.net:587"));
        assert!(is_host_port("[::1]:25"));
        assert!(is_host_port("10.0.0.2:25"));
        assert!(!is_host_port("smtp.example.net"));
        assert!(!is_host_port("bad host:25"));
        assert!(!is_host_port("x:0"));
        assert!(is_domain("edge.example.org"));
        assert!(!is_domain("-x.org"));
        assert!(!is_domain("a..b"));
        assert_eq!(mx_port("mx"), Some(25));
        assert_eq!(mx_port("mx:2525"), Some(2525));
        assert_eq!(mx_port("mx:0"), None);
        assert_eq!(mx_port("mx.example.net:25"), None);
        assert_eq!(mx_port("mx:"), None);
    }
}
