//! `ferrymail flush` (and `sendmail -q`, `-qR DOMAIN`): asks the daemon to deliver what
//! is due. Without a daemon there is nobody to deliver: exit 69.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::control::{Request, Response, client};
use crate::exit::{self, Failure};
use crate::spool::Layout;

#[derive(Args, Debug)]
pub struct FlushArgs {
    /// Only mail for this domain (also releases a hold route's mail for it)
    #[arg(long)]
    pub domain: Option<String>,
    /// Show progress and exit when the flush is done
    #[arg(long)]
    pub wait: bool,
    /// Print the daemon's answer as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: FlushArgs) -> Result<(), Failure> {
    if let Some(d) = &args.domain
        && !crate::config::is_domain(d)
    {
        return Err(Failure::new(
            exit::USAGE,
            format!("--domain {d:?}: not a domain"),
        ));
    }
    request_flush(config, args.domain)
}

pub fn request_flush(config: Option<&Path>, domain: Option<String>) -> Result<(), Failure> {
    let loaded = super::load_config(config)?;
    let layout = Layout::new(&loaded.config.spool);
    let reply = client::request(
        &layout.control,
        &Request::Flush { domain },
        Duration::from_secs(30),
    )
    .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    match reply {
        Response::Error { message, code } => Err(Failure::new(code, message)),
        other => Err(Failure::new(
            exit::SOFTWARE,
            format!("unexpected reply: {other:?}"),
        )),
    }
}
