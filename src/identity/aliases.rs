//! Aliases for local names: `[aliases]` in the configuration and an aliases file in the
//! usual format (`name: target, target`; lines starting with `#` are comments; a line
//! starting with white space continues the one before, as aliases(5) says). Flattened once, when the configuration
//! is loaded: an alias of an alias is followed to the end, so a lookup is one map read,
//! and a loop is an error then, never a surprise at delivery. Keys are local parts,
//! matched without regard to case. The file's pipe, file and `:include:` targets cannot
//! be delivered by a relay: they are left out with a warning.

use std::collections::{BTreeMap, HashMap};

use crate::smtp::Mailbox;

/// Where one alias's mail ends up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// An address elsewhere.
    Address(Mailbox),
    /// A local name that has no alias of its own: the admin address takes it.
    Unaliased(String),
}

/// Flattened aliases: local part (lowercase) to its final targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aliases {
    map: HashMap<String, Vec<Target>>,
}

/// One alias as written: its key and its targets, with where it came from for errors.
#[derive(Clone, Debug)]
pub struct Written {
    pub name: String,
    pub targets: Vec<String>,
    /// `[aliases] root`, or `/etc/aliases:12`.
    pub source: String,
}

impl Aliases {
    /// Flattens `written` (later entries of the same name replace earlier ones).
    /// `is_local` tells whether a target with a domain is one of our names. Errors
    /// name the loop or the bad target.
    pub fn flatten(
        written: &[Written],
        is_local: &dyn Fn(&str) -> bool,
    ) -> Result<Aliases, String> {
        let mut raw: BTreeMap<String, &Written> = BTreeMap::new();
        for w in written {
            raw.insert(w.name.to_ascii_lowercase(), w);
        }
        let mut map = HashMap::new();
        for name in raw.keys() {
            let mut out = Vec::new();
            expand(name, &raw, is_local, &mut vec![name.clone()], &mut out)?;
            let mut seen = std::collections::HashSet::new();
            out.retain(|t| seen.insert(t.clone()));
            map.insert(name.clone(), out);
        }
        Ok(Aliases { map })
    }

    /// The final targets of local part `name`, if it has an alias.
    pub fn get(&self, name: &str) -> Option<&[Target]> {
        self.map.get(&name.to_ascii_lowercase()).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn expand(
    name: &str,
    raw: &BTreeMap<String, &Written>,
    is_local: &dyn Fn(&str) -> bool,
    path: &mut Vec<String>,
    out: &mut Vec<Target>,
) -> Result<(), String> {
    let written = raw[name];
    for target in &written.targets {
        let local = match target.rsplit_once('@') {
            None => Some(target.as_str()),
            Some((part, domain)) if is_local(domain) => Some(part),
            Some(_) => None,
        };
        let Some(part) = local.map(str::to_ascii_lowercase) else {
            let address = Mailbox::parse(target)
                .map_err(|e| format!("{}: {target:?}: {e}", written.source))?;
            out.push(Target::Address(address));
            continue;
        };
        if part == name && path.len() == 1 {
            // `root: root, me@example.org` keeps a copy for the name itself.
            out.push(Target::Unaliased(part));
        } else if path.contains(&part) {
            path.push(part);
            return Err(format!(
                "{}: alias loop: {}",
                written.source,
                path.join(" -> ")
            ));
        } else if raw.contains_key(&part) {
            path.push(part.clone());
            expand(&part, raw, is_local, path, out)?;
            path.pop();
        } else {
            out.push(Target::Unaliased(part));
        }
    }
    Ok(())
}

/// Parses an aliases file's text. Returns the aliases and a warning for each target
/// left out; an error (with its line) for a line that is not `name: targets`.
pub(crate) fn parse_file(text: &str, file: &str) -> Result<(Vec<Written>, Vec<String>), String> {
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match entries.last_mut() {
                Some((_, entry)) => {
                    entry.push(' ');
                    entry.push_str(line.trim());
                }
                None => {
                    return Err(format!(
                        "{file}:{}: a continuation line with nothing before it",
                        i + 1
                    ));
                }
            }
        } else {
            entries.push((i + 1, line.trim().to_owned()));
        }
    }
    let mut written = Vec::new();
    let mut warnings = Vec::new();
    for (line, entry) in entries {
        let source = format!("{file}:{line}");
        let Some((name, rest)) = entry.split_once(':') else {
            return Err(format!("{source}: expected `name: target, target`"));
        };
        let name = name.trim().trim_matches('"');
        if !is_alias_name(name) {
            return Err(format!("{source}: {name:?} is not a local name"));
        }
        let mut targets = Vec::new();
        for target in rest.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let target = target.trim_matches('"');
            if target.starts_with(['|', '/']) || target.starts_with(":include:") {
                warnings.push(format!(
                    "{source}: {name}: target {target:?} left out: a relay delivers only to addresses"
                ));
                continue;
            }
            check_target(target).map_err(|e| format!("{source}: {name}: {e}"))?;
            targets.push(target.to_owned());
        }
        if targets.is_empty() {
            warnings.push(format!(
                "{source}: {name}: no target a relay can deliver to; the alias is left out"
            ));
            continue;
        }
        written.push(Written {
            name: name.to_owned(),
            targets,
            source,
        });
    }
    Ok((written, warnings))
}

/// A name that can be an alias: a dot-atom local part (RFC 5322 §3.2.3).
pub(crate) fn is_alias_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('@')
        && crate::smtp::Mailbox::parse(&format!("{name}@localhost")).is_ok()
}

/// A target: a local name, or a whole address.
pub(crate) fn check_target(target: &str) -> Result<(), String> {
    let ok = if target.contains('@') {
        crate::smtp::Mailbox::parse(target).is_ok()
    } else {
        is_alias_name(target)
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{target:?} is neither a local name nor a mail address"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(entries: &[(&str, &[&str])]) -> Vec<Written> {
        entries
            .iter()
            .map(|(name, targets)| Written {
                name: (*name).to_owned(),
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                source: format!("[aliases] {name}"),
            })
            .collect()
    }

    fn local(domain: &str) -> bool {
        domain.eq_ignore_ascii_case("laptop")
    }

    #[test]
    fn aliases_of_aliases_are_followed_once() {
        let a = Aliases::flatten(
            &written(&[
                ("postmaster", &["root"]),
                ("Root", &["me@example.org", "backup@laptop"]),
                ("backup", &["ops@example.org", "me@example.org"]),
                ("cron", &["nobody-here"]),
            ]),
            &local,
        )
        .unwrap();
        assert_eq!(
            a.get("POSTMASTER").unwrap(),
            [
                Target::Address(Mailbox::parse("me@example.org").unwrap()),
                Target::Address(Mailbox::parse("ops@example.org").unwrap())
            ]
        );
        assert_eq!(
            a.get("cron").unwrap(),
            [Target::Unaliased("nobody-here".into())]
        );
        assert!(a.get("alice").is_none());
    }

    #[test]
    fn loops_are_refused_with_their_path() {
        let e = Aliases::flatten(
            &written(&[
                ("a", &["b"]),
                ("b", &["c@laptop"]),
                ("c", &["a", "x@y.example"]),
            ]),
            &local,
        )
        .unwrap_err();
        assert!(e.contains("alias loop: a -> b -> c -> a"), "{e}");
        let own =
            Aliases::flatten(&written(&[("root", &["root", "me@example.org"])]), &local).unwrap();
        assert_eq!(
            own.get("root").unwrap()[0],
            Target::Unaliased("root".into())
        );
    }

    #[test]
    fn the_usual_file_format() {
        let text = "# comment\npostmaster: root\nroot: me@example.org,\n\tops@example.org\n\
                    logs: |/usr/bin/logger, /var/log/mail\n\"quoted\": \"q@example.org\"\n";
        let (w, warnings) = parse_file(text, "/etc/aliases").unwrap();
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(w[1].targets, ["me@example.org", "ops@example.org"]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].starts_with("/etc/aliases:5: logs:"),
            "{warnings:?}"
        );
        let w = parse_file("\"quoted\": \"q@example.org\"\n", "f")
            .unwrap()
            .0;
        assert_eq!(w[0].name, "quoted");
        assert!(
            parse_file("no colon here\n", "f")
                .unwrap_err()
                .contains("f:1:")
        );
        assert!(parse_file("  cont\n", "f").is_err());
        assert!(parse_file("a: bad@@x\n", "f").is_err());
    }
}
