//! `ferrymail queue` (also `mailq` and `sendmail -bp`): list, show, hold, release,
//! delete, reindex. Listing reads the index read-only, daemon or not. Changes go through
//! the daemon when it runs; otherwise this command takes the spool lock and acts itself.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::control::{ChangeAction, Request, Response, client};
use crate::exit::{self, Failure};
use crate::printable::printable_lines;
use crate::queue::jobs::ChangeOutcome;
use crate::queue::maildrop_entries;
use crate::queue::table::Table;
use crate::spool::envelope::read_stored;
use crate::spool::lock::SpoolLock;
use crate::spool::maildrop::is_drop_name;
use crate::spool::{
    Fs, IndexReader, Layout, QueueId, RealFs, RecipientState, Spool, SpoolOptions, now_unix,
};

#[derive(Args, Debug)]
pub struct QueueArgs {
    /// One JSON array instead of the table
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<QueueAction>,
}

#[derive(Subcommand, Debug)]
pub enum QueueAction {
    /// Show a message: envelope, recipients' states, then its content
    Show { id: String },
    /// Keep messages from delivery until released
    Hold(Select),
    /// Make held messages due now
    Release(Select),
    /// Make waiting messages due now
    Retry(Select),
    /// Remove messages from the queue, without a bounce
    Delete(Select),
    /// Rebuild the index from the spool files (the daemon must be stopped)
    Reindex,
}

#[derive(Args, Debug)]
pub struct Select {
    /// Queue ids
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Every message in the queue
    #[arg(long)]
    pub all: bool,
}

pub fn run(config: Option<&Path>, args: QueueArgs) -> Result<(), Failure> {
    match args.action {
        None => list(config, args.json),
        Some(QueueAction::Show { id }) => show(config, &id),
        Some(QueueAction::Hold(s)) => change(config, ChangeAction::Hold, s),
        Some(QueueAction::Release(s)) => change(config, ChangeAction::Release, s),
        Some(QueueAction::Retry(s)) => change(config, ChangeAction::Retry, s),
        Some(QueueAction::Delete(s)) => change(config, ChangeAction::Delete, s),
        Some(QueueAction::Reindex) => reindex(config),
    }
}

fn layout(config: Option<&Path>) -> Result<Layout, Failure> {
    Ok(Layout::new(&super::load_config(config)?.config.spool))
}

fn index_error(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::IOERR, format!("reading the queue index: {e}"))
}

/// A spool whose queue this user may not read (a root daemon's is private): said
/// plainly, before SQLite says "unable to open database file".
fn readable(layout: &Layout) -> Result<(), Failure> {
    match std::fs::File::open(&layout.index) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Failure::new(
            exit::NOPERM,
            format!(
                "the queue in {} is private to its daemon's user: run this as root (or that user)",
                layout.root.display()
            ),
        )),
        _ => Ok(()),
    }
}

pub fn list(config: Option<&Path>, json: bool) -> Result<(), Failure> {
    let layout = layout(config)?;
    readable(&layout)?;
    let reader = IndexReader::open(&layout).map_err(index_error)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let drops = maildrop_entries(&RealFs, &layout);
    let written = if json {
        let mut first = true;
        let mut emit = |out: &mut dyn Write, e: &crate::queue::QueueEntry| -> std::io::Result<()> {
            out.write_all(if first { b"[\n" } else { b",\n" })?;
            first = false;
            serde_json::to_writer(&mut *out, e).map_err(std::io::Error::other)
        };
        if let Some(reader) = &reader {
            reader
                .for_each_entry(None, |e| emit(&mut out, &e))
                .map_err(index_error)?;
        }
        for e in &drops {
            emit(&mut out, e).map_err(index_error)?;
        }
        out.write_all(if first { b"[]\n" } else { b"\n]\n" })
    } else {
        let mut table = Table::new(&mut out, now_unix());
        if let Some(reader) = &reader {
            reader
                .for_each_entry(None, |e| table.entry(&e))
                .map_err(index_error)?;
        }
        for e in &drops {
            table.entry(e).map_err(index_error)?;
        }
        table.finish()
    };
    written.and_then(|()| out.flush()).map_err(index_error)
}

fn parse_id(id: &str) -> Result<QueueId, Failure> {
    QueueId::parse(id).map_err(|e| Failure::new(exit::USAGE, e.to_string()))
}

fn show(config: Option<&Path>, id: &str) -> Result<(), Failure> {
    let id = parse_id(id)?;
    let layout = layout(config)?;
    readable(&layout)?;
    let path = layout.message_path(id);
    let stored = read_stored(&RealFs, &path).map_err(|e| match e {
        crate::spool::envelope::FormatError::Io(io)
            if io.kind() == std::io::ErrorKind::NotFound =>
        {
            Failure::new(exit::NOINPUT, format!("{id}: no such message in the queue"))
        }
        other => Failure::new(exit::IOERR, format!("{}: {other}", path.display())),
    })?;
    let e = &stored.envelope;
    let mut text = String::new();
    text.push_str(&format!("id:          {id}\n"));
    let received = jiff::Timestamp::from_second(e.received_at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    text.push_str(&format!("received:    {received}\n"));
    text.push_str(&format!("sender:      <{}>\n", e.sender));
    text.push_str(&format!(
        "size:        {} bytes{}\n",
        stored.content_size(),
        if stored.trailer.eight_bit {
            ", 8-bit"
        } else {
            ""
        }
    ));
    let o = &e.origin;
    let mut origin = o.kind.to_string();
    for (k, v) in [
        ("client", &o.client),
        ("helo", &o.helo),
        ("auth", &o.auth),
        ("drop", &o.drop),
    ] {
        if let Some(v) = v {
            origin.push_str(&format!(" {k}={v}"));
        }
    }
    if let Some(uid) = o.uid {
        origin.push_str(&format!(" uid={uid}"));
    }
    text.push_str(&format!("origin:      {origin}\n"));
    if let Some(envid) = &e.envid {
        text.push_str(&format!("envid:       {envid}\n"));
    }
    text.push_str("recipients:\n");
    let mut states = Vec::new();
    if let Some(reader) = IndexReader::open(&layout).map_err(index_error)? {
        reader
            .for_each_entry(Some(id.as_str()), |entry| {
                states = entry.recipients;
                Ok(())
            })
            .map_err(index_error)?;
    }
    for (i, r) in e.recipients.iter().enumerate() {
        let st = states.get(i);
        let state = st
            .and_then(|s| s.state)
            .map_or("not indexed", RecipientState::as_str);
        let attempts = st.map_or(0, |s| s.attempts);
        text.push_str(&format!(
            "  {:<40} {state}, {attempts} attempt(s)\n",
            r.address
        ));
        if let Some(reply) = st.and_then(|s| s.last_reply.as_ref()) {
            text.push_str(&format!("      {reply}\n"));
        }
    }
    text.push('\n');
    let body = crate::spool::envelope::read_body(&RealFs, &path, &stored)
        .map_err(|e| Failure::new(exit::IOERR, format!("{}: {e}", path.display())))?;
    // Envelope fields came from outside; so did the message, which is shown as it is
    // only when it goes to a file or a pipe, never raw to a terminal.
    let text = printable_lines(text.as_bytes());
    let mut out = std::io::stdout().lock();
    let body = if std::io::IsTerminal::is_terminal(&out) {
        printable_lines(&body).into_bytes()
    } else {
        body
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(&body))
        .map_err(|e| Failure::new(exit::IOERR, e.to_string()))
}

fn change(config: Option<&Path>, action: ChangeAction, select: Select) -> Result<(), Failure> {
    let ids: Vec<QueueId> = select
        .ids
        .iter()
        .map(|s| parse_id(s))
        .collect::<Result<_, _>>()?;
    let layout = layout(config)?;
    let request = Request::Change {
        action,
        ids: ids.clone(),
        all: select.all,
    };
    let mut from_maildrop = 0;
    let outcome = match client::request(&layout.control, &request, Duration::from_secs(60)) {
        Ok(reply) => match super::answer(reply)? {
            Response::Changed(outcome) => outcome,
            other => return Err(super::unexpected(other)),
        },
        Err(client::ControlError::NoDaemon(_)) => {
            let outcome = change_offline(&layout, action, ids, select.all)?;
            if action == ChangeAction::Delete && select.all {
                // Nobody picks them up meanwhile: they go too.
                from_maildrop = delete_drops(&layout)?;
            }
            outcome
        }
        Err(e) => return Err(Failure::new(exit::TEMPFAIL, e.to_string())),
    };
    let verb = match action {
        ChangeAction::Hold => "held",
        ChangeAction::Release => "released",
        ChangeAction::Retry => "due now",
        ChangeAction::Delete => "deleted",
    };
    if select.all {
        println!("{} message(s) {verb}", outcome.count + from_maildrop);
        if from_maildrop > 0 {
            println!("({from_maildrop} of them not yet picked up from the maildrop)");
        }
        let waiting = maildrop_entries(&RealFs, &layout).len();
        if waiting > 0 {
            println!(
                "{waiting} message(s) in the maildrop, not yet in the queue, were left alone: \
                 run it again once the daemon has picked them up"
            );
        }
    }
    for id in &outcome.changed {
        println!("{id}: {verb}");
    }
    if outcome.unknown.is_empty() {
        return Ok(());
    }
    let unknown: Vec<String> = outcome.unknown.iter().map(ToString::to_string).collect();
    Err(Failure::new(
        exit::NOINPUT,
        format!("not in the queue: {}", unknown.join(" ")),
    ))
}

/// Without a daemon: take the lock, open (and so recover) the spool, apply, close.
/// Removes every drop waiting in `maildrop/new` (the spool lock is held: no daemon
/// picks one up meanwhile); returns how many.
fn delete_drops(layout: &Layout) -> Result<usize, Failure> {
    let io = |e: std::io::Error| {
        Failure::new(
            exit::IOERR,
            format!("{}: {e}", layout.maildrop_new.display()),
        )
    };
    let mut removed = 0;
    for name in RealFs.list_dir(&layout.maildrop_new).map_err(io)? {
        if name.to_str().is_some_and(is_drop_name) {
            match std::fs::remove_file(layout.maildrop_new.join(&name)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    if removed > 0 {
        RealFs.sync_dir(&layout.maildrop_new).map_err(io)?;
    }
    Ok(removed)
}

fn change_offline(
    layout: &Layout,
    action: ChangeAction,
    ids: Vec<QueueId>,
    all: bool,
) -> Result<ChangeOutcome, Failure> {
    let _lock = lock(layout)?;
    let (spool, _) = Spool::open(layout.clone(), Arc::new(RealFs), SpoolOptions::default())
        .map_err(|e| {
            Failure::new(
                exit::IOERR,
                format!("opening spool {}: {e}", layout.root.display()),
            )
        })?;
    let change = action.change(ids, all);
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?
        .block_on(crate::queue::jobs::apply(&spool, change));
    spool.close();
    outcome.map_err(|e| Failure::new(exit::IOERR, e.to_string()))
}

fn lock(layout: &Layout) -> Result<SpoolLock, Failure> {
    SpoolLock::acquire(&layout.root, &layout.lock).map_err(|e| match e {
        crate::spool::lock::LockError::Busy { pid, .. } => Failure::new(
            exit::TEMPFAIL,
            format!(
                "the spool is locked by pid {pid}, but no daemon answers on {}; try again",
                layout.control.display()
            ),
        ),
        other => Failure::new(exit::CANTCREAT, other.to_string()),
    })
}

fn reindex(config: Option<&Path>) -> Result<(), Failure> {
    let layout = layout(config)?;
    let _lock = SpoolLock::acquire(&layout.root, &layout.lock).map_err(|e| match e {
        crate::spool::lock::LockError::Busy { pid, .. } => Failure::new(
            exit::TEMPFAIL,
            format!("the daemon (pid {pid}) is running; stop it first (it re-indexes at start when needed)"),
        ),
        other => Failure::new(exit::CANTCREAT, other.to_string()),
    })?;
    let count = Spool::reindex(&layout, Arc::new(RealFs))
        .map_err(|e| Failure::new(exit::IOERR, format!("reindex: {e}")))?;
    println!(
        "re-indexed {count} message(s) from {}",
        layout.queue.display()
    );
    Ok(())
}
