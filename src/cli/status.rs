//! `ferrymail status`: the daemon's state and queue counts, from the control socket.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::control::{Request, Response, client};
use crate::exit::{self, Failure};
use crate::queue::table::age;
use crate::spool::{Layout, now_unix};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// One JSON document instead of text
    #[arg(long)]
    pub json: bool,
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
    println!("delivery:  {}", status.delivery);
    let counts: Vec<String> = status
        .recipients
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| format!("{} {}", c.count, c.state))
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
    Ok(())
}
