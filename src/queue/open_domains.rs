//! Held domains opened for delivery: a flush or ETRN naming a domain of a `hold` route
//! opens it (and, with `@domain`, its subdomains) for `etrn.open_for`, during which its
//! mail goes out over the route, and new mail for it too; then the route holds again.
//! `status` lists what is open and until when.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::now_unix;

/// Held domains opened for delivery, each until a deadline.
pub struct OpenDomains {
    open_for: Mutex<Duration>,
    open: Mutex<Vec<(String, bool, Instant)>>,
}

/// An open held domain, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenDomain {
    pub domain: String,
    /// Its subdomains are open too (`ETRN @domain`).
    pub subdomains: bool,
    /// Unix seconds when it holds again.
    pub until: i64,
}

impl OpenDomains {
    /// Each opening lasts `open_for`.
    pub fn new(open_for: Duration) -> OpenDomains {
        OpenDomains {
            open_for: Mutex::new(open_for),
            open: Mutex::new(Vec::new()),
        }
    }

    /// Later openings last `open_for` (a reload).
    pub(crate) fn set_open_for(&self, open_for: Duration) {
        *self.open_for.lock().expect("not poisoned") = open_for;
    }

    /// Opens `domain` (and its subdomains when `subdomains`) for `open_for`, or
    /// extends an opening of it.
    pub fn open(&self, domain: &str, subdomains: bool) {
        let now = Instant::now();
        let until = now + *self.open_for.lock().expect("not poisoned");
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut open = self.open.lock().expect("not poisoned");
        open.retain(|(d, s, t)| *t > now && !(*d == domain && *s == subdomains));
        open.push((domain, subdomains, until));
    }

    /// What is open now.
    pub(crate) fn list(&self) -> Vec<OpenDomain> {
        let (now, wall) = (Instant::now(), now_unix());
        self.open
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, _, until)| *until > now)
            .map(|(domain, subdomains, until)| OpenDomain {
                domain: domain.clone(),
                subdomains: *subdomains,
                until: wall + until.saturating_duration_since(now).as_secs() as i64,
            })
            .collect()
    }

    pub fn is_open(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = Instant::now();
        self.open
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(d, subdomains, until)| {
                *until > now
                    && (domain == *d || (*subdomains && domain.ends_with(&format!(".{d}"))))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_opens_with_or_without_its_subdomains() {
        let open = OpenDomains::new(Duration::from_secs(600));
        assert!(!open.is_open("field.example"));
        open.open("Field.Example.", false);
        assert!(open.is_open("field.example"));
        assert!(!open.is_open("a.field.example"));
        open.open("other.example", true);
        assert!(open.is_open("a.b.other.example"));
        assert!(!open.is_open("xother.example"));
        open.open("field.example", false);
        let listed = open.list();
        assert_eq!(listed.len(), 2, "opening again extends: {listed:?}");
        assert!(listed[1].until >= now_unix() + 599);
    }
}
