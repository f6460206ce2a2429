//! `ferrymail flush` (and `sendmail -q`, `-qR DOMAIN`): wakes the daemon's queue owner;
//! with a domain, that domain's held mail is released first. `--wait` follows the queue
//! until nothing is due or in flight, then exits 0 if everything due was delivered and
//! 75 if some of it stays deferred. Without a daemon there is nobody to deliver: exit 69.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::control::{Request, Response, client};
use crate::exit::{self, Failure};
use crate::spool::{Layout, index, now_unix};

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
        && !crate::config::is_domain(d)
    {
        return Err(Failure::new(
            exit::USAGE,
            format!("--domain {d:?}: not a domain"),
        ));
    }
    let layout = Layout::new(&super::load_config(config)?.config.spool);
    let released = start(&layout, args.domain.clone())?;
    let deferred = if args.wait {
        Some(wait(&layout)?)
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "released": released, "deferred": deferred })
        );
    } else {
        if released > 0 {
            println!("{released} waiting made due now");
        }
        match deferred {
            None => println!("flush started"),
            Some(0) => println!("everything due was delivered"),
            Some(n) => println!("{n} recipient(s) still deferred (see ferrymail queue)"),
        }
    }
    match deferred {
        Some(n) if n > 0 => Err(Failure::new(
            exit::TEMPFAIL,
            format!("{n} recipient(s) still deferred"),
        )),
        _ => Ok(()),
    }
}

/// For `sendmail -q` / `-qR`: start a flush, quietly.
pub fn request_flush(config: Option<&Path>, domain: Option<String>) -> Result<(), Failure> {
    let layout = Layout::new(&super::load_config(config)?.config.spool);
    start(&layout, domain).map(|_| ())
}

fn start(layout: &Layout, domain: Option<String>) -> Result<usize, Failure> {
    let reply = client::request(
        &layout.control,
        &Request::Flush { domain },
        Duration::from_secs(30),
    )
    .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    match super::answer(reply)? {
        Response::FlushStarted { released } => Ok(released),
        other => Err(super::unexpected(other)),
    }
}

/// Polls the index until no recipient is due or in flight; returns how many are deferred.
fn wait(layout: &Layout) -> Result<i64, Failure> {
    let io = |e: rusqlite::Error| Failure::new(exit::IOERR, format!("reading the queue: {e}"));
    loop {
        let Some(conn) = index::open_reader(&layout.index).map_err(io)? else {
            return Ok(0);
        };
        let (busy, deferred): (i64, i64) = conn
            .query_row(
                "SELECT
                   COUNT(*) FILTER (WHERE state = 'in_flight'
                       OR (state IN ('queued', 'deferred') AND next_attempt_at <= ?1)),
                   COUNT(*) FILTER (WHERE state = 'deferred')
                 FROM recipient",
                [now_unix()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(io)?;
        if busy == 0 {
            return Ok(deferred);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
