//! `ferrymail flush` (and `sendmail -q`, `-qR DOMAIN`): makes waiting mail due and starts
//! a run on every route (or the domain's), which every link mode honours; with a domain,
//! a hold route's mail for it is released. `--wait` follows the daemon until nothing is
//! due or in flight, with a live line of progress on a terminal, then exits 0 if
//! everything was delivered and 75 if some mail is still waiting (deferred, or waiting
//! for its link), saying why for each route. Without a daemon there is nobody to
//! deliver: exit 69.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use std::io::IsTerminal;

use crate::control::{FlushProgress, Request, Response, client};
use crate::exit::{self, Failure};
use crate::queue::table::size;
use crate::spool::Layout;

#[derive(Args, Debug)]
pub struct FlushArgs {
    /// Only mail for this domain (also releases a hold route's mail for it)
    #[arg(long)]
    pub domain: Option<String>,
    /// Wait until nothing is due or in flight; exit 75 if some mail stays deferred
    #[arg(long)]
    pub wait: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: FlushArgs) -> Result<(), Failure> {
    if let Some(d) = &args.domain
        && !crate::smtp::domain::is_domain(d)
    {
        return Err(Failure::new(
            exit::USAGE,
            format!("--domain {d:?}: not a domain"),
        ));
    }
    let layout = Layout::new(&super::load_config(config)?.config.spool);
    let domain = args.domain.clone();
    let before = progress(&layout, domain.clone())?;
    let (released, coalesced) = start(&layout, args.domain.clone())?;
    let after = if args.wait {
        Some(wait(&layout, domain, &before, !args.json)?)
    } else {
        None
    };
    let sent = after.as_ref().map(|p| {
        (
            p.messages_sent - before.messages_sent,
            p.bytes_sent - before.bytes_sent,
        )
    });
    let waiting = after.as_ref().map(|p| p.waiting);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "released": released,
                "coalesced": coalesced,
                "delivered": sent.map(|s| s.0),
                "bytes": sent.map(|s| s.1),
                "waiting": waiting,
                "waiting_routes": after.as_ref().map(|p| &p.waiting_routes),
            })
        );
    } else {
        if released > 0 {
            println!("{released} recipient(s) waiting for the domain, now on their way");
        }
        if coalesced {
            println!("joined a delivery already running");
        }
        match (waiting, sent) {
            (None, _) => println!("flush started"),
            (Some(0), Some((n, bytes))) => {
                println!(
                    "everything due was delivered ({n} message(s), {})",
                    size(bytes)
                )
            }
            (Some(w), Some((n, _))) => {
                println!("{n} message(s) delivered; {w} recipient(s) still waiting:");
                for r in after.iter().flat_map(|p| &p.waiting_routes) {
                    let reason = r.reason.as_deref().unwrap_or("not yet tried");
                    println!(
                        "  {}: {} recipient(s): {}",
                        r.route,
                        r.recipients,
                        crate::printable::printable(reason)
                    );
                }
            }
            (Some(_), None) => {}
        }
    }
    match waiting {
        Some(n) if n > 0 => Err(Failure::new(
            exit::TEMPFAIL,
            format!("{n} recipient(s) still waiting (see ferrymail queue)"),
        )),
        _ => Ok(()),
    }
}

/// For `sendmail -q` / `-qR`: start a flush, quietly.
pub(crate) fn request_flush(config: Option<&Path>, domain: Option<String>) -> Result<(), Failure> {
    let layout = Layout::new(&super::load_config(config)?.config.spool);
    start(&layout, domain).map(|_| ())
}

fn ask(layout: &Layout, request: &Request) -> Result<Response, Failure> {
    let reply = client::request(&layout.control, request, Duration::from_secs(30))
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    super::answer(reply)
}

fn start(layout: &Layout, domain: Option<String>) -> Result<(usize, bool), Failure> {
    match ask(layout, &Request::Flush { domain })? {
        Response::FlushStarted {
            released,
            coalesced,
        } => Ok((released, coalesced)),
        other => Err(super::unexpected(other)),
    }
}

fn progress(layout: &Layout, domain: Option<String>) -> Result<FlushProgress, Failure> {
    match ask(layout, &Request::Progress { domain })? {
        Response::Progress(p) => Ok(p),
        other => Err(super::unexpected(other)),
    }
}

/// Follows the daemon until nothing is due or in flight; on a terminal, one live line of
/// progress on stderr.
fn wait(
    layout: &Layout,
    domain: Option<String>,
    before: &FlushProgress,
    show: bool,
) -> Result<FlushProgress, Failure> {
    let live = show && std::io::stderr().is_terminal();
    loop {
        let p = progress(layout, domain.clone())?;
        if live {
            let via = if p.active.is_empty() {
                String::new()
            } else {
                format!(", via {}", p.active.join(", "))
            };
            eprint!(
                "\r\x1b[K{} sent ({}), {} remaining{via}",
                p.messages_sent - before.messages_sent,
                size(p.bytes_sent - before.bytes_sent),
                p.busy
            );
        }
        if p.busy == 0 && !p.working {
            if live {
                eprintln!();
            }
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
