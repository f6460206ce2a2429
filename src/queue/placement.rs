//! Where committed mail goes, decided when it is indexed: its route and lane (the
//! router's choice for its domain), and whether it waits — held for a hold route whose
//! domain no flush or ETRN has opened, or waiting for the link when its route's gate
//! keeps it back. Mail to one of our own names that is still in the queue had nowhere
//! to go when it was committed (identity::local): it is held on the `local` lane, which
//! no route serves. The queue owner gives this to the spool's writer.

use super::kit::Kit;
use super::lane::Lane;
use super::open_domains::OpenDomains;
use crate::delivery::route::Target;
use crate::link::Permit;
use crate::link::gate::covers;
use crate::spool::{Placement, Wait};

/// Why mail for a hold route waits.
pub const HELD: &str = "held until a flush or ETRN names its domain";
/// Why mail for a `via = "odmr"` route waits.
pub const ODMR_HELD: &str = "held for its station to collect (ODMR, RFC 2645)";
/// Why mail for a `via = "bundle"` route waits.
pub const BUNDLE_HELD: &str = "held for the next bundle (ferrymail bundle export)";

/// The lane of mail kept for a local name: no route has this name (route names are
/// domains, `upstream`, `mx`, or a route's `name`, which may not be `local`).
pub const LOCAL: &str = "local";

/// The route and lane of `domain`'s mail.
pub(crate) fn place_route(kit: &Kit, domain: &str) -> Placement {
    if kit.router.is_local(domain) {
        return Placement {
            route: LOCAL.into(),
            lane: LOCAL.into(),
            wait: Some(Wait::Held(crate::identity::local::KEPT.into())),
        };
    }
    let route = kit.router.route(domain);
    Placement {
        route: route.name.clone(),
        lane: Lane::of(route, domain).key(),
        wait: None,
    }
}

/// `place_route`, and whether new mail waits: held for a hold route whose domain is not
/// open, waiting for the link when the route's gate keeps it back.
pub fn place(kit: &Kit, open: &OpenDomains, domain: &str) -> Placement {
    let mut placement = place_route(kit, domain);
    if placement.route == LOCAL {
        return placement;
    }
    let route = kit.router.route(domain);
    placement.wait = if route.target == Target::Odmr {
        Some(Wait::Held(ODMR_HELD.into()))
    } else if route.target == Target::Bundle {
        Some(Wait::Held(BUNDLE_HELD.into()))
    } else if route.hold && !open.is_open(domain) {
        Some(Wait::Held(HELD.into()))
    } else {
        match kit.link.permit(&route.name) {
            Permit::Open => None,
            Permit::Closed { reason, .. } => Some(Wait::Link(reason)),
            Permit::Only(scope) => {
                (!covers(&scope, domain)).then(|| Wait::Link(kit.link.closed_reason(&route.name).0))
            }
        }
    };
    placement
}
