//! `ferrymail status`: the daemon, each route's link gate (state, reason, since; whether
//! it may deliver), queue counts, the last flush and the next scheduled run, from the
//! control socket.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::config::LinkMode;
use crate::control::{Request, Response, client};
use crate::exit::{self, Failure};
use crate::link::gate::LinkState;
use crate::printable::printable;
use crate::queue::table::age;
use crate::spool::{Layout, now_unix};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// One JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

fn mode_name(mode: LinkMode) -> &'static str {
    match mode {
        LinkMode::Auto => "auto",
        LinkMode::Schedule => "schedule",
        LinkMode::Manual => "manual",
    }
}

pub fn run(config: Option<&Path>, args: StatusArgs) -> Result<(), Failure> {
    let loaded = super::load_config(config)?;
    let layout = Layout::new(&loaded.config.spool);
    let reply = client::request(&layout.control, &Request::Status, Duration::from_secs(10))
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    let status = match super::answer(reply)? {
        Response::Status(s) => s,
        other => return Err(super::unexpected(other)),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serialises")
        );
        return Ok(());
    }
    println!(
        "daemon:    running, pid {}, version {}, up {}",
        status.pid,
        status.version,
        age(now_unix() - status.started_at)
    );
    println!("spool:     {}", status.spool);
    println!("hostname:  {}", status.hostname);
    println!("listening: {}", status.listeners.join(", "));
    println!("link mode: {}", mode_name(status.mode));
    let now = now_unix();
    for r in &status.routes {
        if r.odmr {
            println!(
                "route:     {} → odmr: held until its station collects it (ATRN)",
                r.route
            );
            continue;
        }
        let gate = match (&r.run, r.open) {
            (Some(why), true) => format!("delivering ({why})"),
            (None, true) => "may deliver".to_owned(),
            (_, false) if r.state == LinkState::Down => "waiting for the link".to_owned(),
            (_, false) => match r.mode {
                LinkMode::Manual => "waiting for a flush".to_owned(),
                _ => "outside its delivery windows".to_owned(),
            },
        };
        let probe = match r.next_probe_at {
            Some(at) => format!("; next probe in {}", age(at - now)),
            None => String::new(),
        };
        println!(
            "route:     {} → {} ({}): {} for {} ({}); {gate}{probe}",
            r.route,
            r.target,
            mode_name(r.mode),
            r.state.as_str(),
            age(now - r.since),
            printable(&r.reason)
        );
    }
    if let Some(f) = &status.last_flush {
        println!(
            "flushed:   {} ago, by {}: {}",
            age(now - f.at),
            printable(&f.why),
            printable(&f.result)
        );
    }
    for d in &status.open_domains {
        println!(
            "open:      {}{} (held mail goes out) for {} more",
            if d.subdomains { "@" } else { "" },
            d.domain,
            age(d.until - now)
        );
    }
    for d in &status.odmr {
        let turn = match (d.last_turn, &d.station) {
            (Some(at), Some(station)) => format!(
                "; last turn {} ago by {}, {} recipient(s) delivered",
                age(now - at),
                printable(station),
                d.moved
            ),
            _ => "; no turn since the daemon started".to_owned(),
        };
        println!("odmr:      {}: {} waiting{turn}", d.domain, d.waiting);
    }
    if let Some(next) = status.next_flush_at {
        println!("next run:  in {}", age(next - now));
    }
    let counts: Vec<String> = status
        .recipients
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    println!(
        "queue:     {} message(s){}{}",
        status.messages,
        if counts.is_empty() {
            String::new()
        } else {
            format!("; recipients: {}", counts.join(", "))
        },
        if status.maildrop > 0 {
            format!("; {} waiting in maildrop", status.maildrop)
        } else {
            String::new()
        }
    );
    if status.kept > 0 {
        println!(
            "kept:      {} failed notice(s) nobody could receive; see `ferrymail queue`",
            status.kept
        );
    }
    Ok(())
}
