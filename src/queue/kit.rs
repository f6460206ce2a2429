//! What the queue owner and its lanes' runners are configured with: the `Kit` every
//! runner shares (spool, routes, client settings, resolver, link), and the settings a
//! reload hands the owner whole (`OwnerSettings`). Nothing here imports the owner or its
//! handle, so both can name these.

use std::collections::HashMap;
use std::sync::Arc;

use super::notices::NoticeSettings;
use super::retry::RetryPolicy;
use crate::delivery::client::ClientSettings;
use crate::delivery::connect::LoopCheck;
use crate::delivery::mx::MxResolver;
use crate::delivery::route::Router;
use crate::delivery::runner::DeliveryTotals;
use crate::link::LinkMonitor;
use crate::spool::Spool;

/// What every runner needs, shared by all of them.
pub struct Kit {
    pub spool: Spool,
    pub router: Router,
    pub settings: HashMap<String, ClientSettings>,
    pub resolver: Arc<MxResolver>,
    pub us: LoopCheck,
    pub progress: Arc<DeliveryTotals>,
    pub link: Arc<LinkMonitor>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set at shutdown: runners finish what they hold and ask for nothing more.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// What a reload changes for the queue owner.
pub struct OwnerSettings {
    pub kit: Arc<Kit>,
    pub retry: RetryPolicy,
    pub notices: Arc<NoticeSettings>,
}
