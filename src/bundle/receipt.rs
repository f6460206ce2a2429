//! A receipt read at the exporting node (the report names the bundle it answers): the recipients it names as accepted are
//! delivered (the peer has them durably, and carries their DSN requests on, RFC 3461
//! §6.2.1), those it names as refused bounce with a notice to their sender. Only
//! recipients still waiting for a receipt (bundled, or back in the queue after waiting
//! too long) are touched, so a receipt read twice changes nothing the second time.

use std::collections::HashMap;

use super::export::answer_by_lane;
use super::import::Imported;
use super::record::{Receipt, Refused};
use crate::delivery::outcome::{Classified, Outcome};
use crate::queue::handle::QueueHandle;
use crate::spool::QueueId;

/// A recipient as the queue names it: its message, and its position there.
type Named = (QueueId, usize);

/// Records what `receipts` (from `node`) say; counts land in `report`.
pub async fn apply(
    queue: &QueueHandle,
    node: &str,
    receipts: Vec<Receipt>,
    report: &mut Imported,
) -> Result<(), String> {
    for receipt in receipts {
        report.bundle = receipt.bundle.clone();
        let (accepted, refused) = named(&receipt);
        let mut fate: HashMap<_, Classified> = HashMap::new();
        for key in &accepted {
            fate.insert(
                *key,
                Classified::decided(
                    Outcome::Delivered,
                    format!("accepted by {node} (bundle {})", receipt.bundle),
                    "2.0.0",
                ),
            );
        }
        for (id, position, r) in &refused {
            fate.insert(
                (*id, *position),
                Classified::decided(
                    Outcome::Bounced,
                    format!("refused by {node}: {}", r.reason),
                    &r.status,
                ),
            );
        }
        let names: Vec<_> = fate.keys().copied().collect();
        let claims = queue
            .claim_named(names.clone())
            .await
            .map_err(|e| format!("reading the receipt: {e}"))?;
        report.unknown += (names.len() - claims.len()) as u64;
        let mut results = Vec::with_capacity(claims.len());
        for claim in claims {
            if let Some(c) = fate.remove(&(claim.message_id, claim.position)) {
                match c.outcome {
                    Outcome::Delivered => report.delivered += 1,
                    _ => report.bounced += 1,
                }
                results.push((claim, c));
            }
        }
        answer_by_lane(queue, results, Some(node), Vec::new()).await;
    }
    Ok(())
}

/// A receipt's recipients as the queue names them: accepted, and refused with why.
fn named(receipt: &Receipt) -> (Vec<Named>, Vec<(QueueId, usize, Refused)>) {
    let accepted = receipt
        .accepted
        .iter()
        .filter_map(|a| QueueId::parse(&a.id).ok().map(|id| (id, &a.positions)))
        .flat_map(|(id, ps)| ps.iter().map(move |p| (id, *p)))
        .collect();
    let refused = receipt
        .refused
        .iter()
        .filter_map(|r| {
            QueueId::parse(&r.id)
                .ok()
                .map(|id| (id, r.position, r.clone()))
        })
        .collect();
    (accepted, refused)
}
