//! Held domains opened for delivery: a flush or ETRN naming a domain of a `hold` route
//! opens it (and, with `@domain`, its subdomains) for a while, during which its mail goes
//! out over the route; then the route holds again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a flush or ETRN keeps a held domain open for delivery.
pub const OPEN_FOR: Duration = Duration::from_secs(600);

/// Held domains opened for delivery, each until a deadline.
#[derive(Default)]
pub struct OpenDomains {
    open: Mutex<Vec<(String, bool, Instant)>>,
}

impl OpenDomains {
    /// Opens `domain` (and its subdomains when `subdomains`) for `OPEN_FOR`.
    pub fn open(&self, domain: &str, subdomains: bool) {
        let now = Instant::now();
        let mut open = self.open.lock().expect("not poisoned");
        open.retain(|(_, _, until)| *until > now);
        open.push((
            domain.trim_end_matches('.').to_ascii_lowercase(),
            subdomains,
            now + OPEN_FOR,
        ));
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
        let open = OpenDomains::default();
        assert!(!open.is_open("field.example"));
        open.open("Field.Example.", false);
        assert!(open.is_open("field.example"));
        assert!(!open.is_open("a.field.example"));
        open.open("other.example", true);
        assert!(open.is_open("a.b.other.example"));
        assert!(!open.is_open("xother.example"));
    }
}
