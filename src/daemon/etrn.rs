//! The listener's ETRN requests go to the queue owner's flush (`queue::flush`).

use std::future::Future;
use std::pin::Pin;

use crate::queue::handle::FlushTarget;
use crate::queue::handle::QueueHandle;
use crate::server::etrn::{Flush, Flushed};

pub struct EtrnService(pub QueueHandle);

impl Flush for EtrnService {
    fn flush<'a>(
        &'a self,
        domain: &'a str,
        subdomains: bool,
    ) -> Pin<Box<dyn Future<Output = Flushed> + Send + 'a>> {
        Box::pin(async move {
            let target = FlushTarget::Domain {
                domain: domain.to_owned(),
                subdomains,
            };
            let why = format!("ETRN {}{domain}", if subdomains { "@" } else { "" });
            match self.0.flush(target, &why).await {
                Ok(started) => Flushed::Started {
                    released: started.released,
                    coalesced: started.coalesced,
                },
                Err(e) => {
                    tracing::error!(error = %e, domain, "ETRN: flush failed");
                    Flushed::Failed
                }
            }
        })
    }
}
