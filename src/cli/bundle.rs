//! `ferrymail bundle`: mail carried without a network. `export` asks the daemon to
//! write a route's waiting mail into a file (or stdout) for the peer that takes the
//! route; `import` hands it a bundle (or a receipt) from a file or stdin, and takes the
//! receipt to send back; `keygen` writes a key two nodes share. The files are opened
//! here, by the user who runs the command, and handed to the daemon over its control
//! socket, so the daemon needs no access to the stick or the pipe. Reports go to
//! stderr when the bundle itself goes to stdout.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::bundle::export::{Exported, Format};
use crate::bundle::import::Imported;
use crate::control::{Request, Response, client};
use crate::exit::{self, Failure};
use crate::spool::Layout;

/// How long the CLI waits for an export or import to finish.
const WORK_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Args, Debug)]
pub struct BundleArgs {
    #[command(subcommand)]
    pub command: BundleCommand,
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Write a route's waiting mail into a bundle for the peer that takes the route
    Export(ExportArgs),
    /// Import a bundle (and write its receipt), or read a receipt
    Import(ImportArgs),
    /// Write a new key to share with a peer
    Keygen {
        /// The key file to create (mode 0600); it must not exist
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The route whose mail to export (`upstream`, `mx`, or a [[route]]'s name)
    #[arg(long)]
    pub route: String,
    /// Stop before the file would pass this many bytes; the rest waits for the next one
    #[arg(long, value_name = "N")]
    pub max_bytes: Option<u64>,
    /// Where to write it (`-`: stdout)
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub out: String,
    /// `bundle` (for a ferrymail peer) or `bsmtp` (batched SMTP, as Exim reads with -bS)
    #[arg(long, value_enum, default_value = "bundle")]
    pub format: FormatArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Bundle,
    Bsmtp,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Where to write the receipt for the peer (a mail bundle only)
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
    /// The bundle or receipt (`-`: stdin)
    #[arg(default_value = "-")]
    pub file: String,
}

pub fn run(config: Option<&Path>, args: BundleArgs) -> Result<(), Failure> {
    match args.command {
        BundleCommand::Keygen { out } => keygen(&out),
        BundleCommand::Export(a) => {
            let layout = Layout::new(&super::load_config(config)?.config.spool);
            export(&layout, a)
        }
        BundleCommand::Import(a) => {
            let layout = Layout::new(&super::load_config(config)?.config.spool);
            import(&layout, a)
        }
    }
}

fn keygen(out: &Path) -> Result<(), Failure> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| Failure::new(exit::CANTCREAT, format!("{}: {e}", out.display())))?;
    file.write_all(crate::bundle::key::generate().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::new(exit::IOERR, format!("{}: {e}", out.display())))?;
    println!(
        "{}: a new bundle key; copy it to the peer, and name it in both nodes' [[bundle_peer]] key_file",
        out.display()
    );
    Ok(())
}

fn export(layout: &Layout, args: ExportArgs) -> Result<(), Failure> {
    let to_stdout = args.out == "-";
    let file = if to_stdout {
        None
    } else {
        Some(create(Path::new(&args.out))?)
    };
    let stdout = std::io::stdout();
    let fd = match &file {
        Some(f) => f.as_fd(),
        None => stdout.as_fd(),
    };
    let request = Request::BundleExport {
        route: args.route.clone(),
        format: match args.format {
            FormatArg::Bundle => Format::Bundle,
            FormatArg::Bsmtp => Format::Bsmtp,
        },
        max_bytes: args.max_bytes,
    };
    let result = ask(layout, &request, &[fd]);
    let done = match result {
        Ok(Response::Exported(done)) => done,
        Ok(other) => return Err(super::unexpected(other)),
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&args.out);
            }
            return Err(e);
        }
    };
    if !to_stdout && done.messages == 0 {
        let _ = std::fs::remove_file(&args.out);
    }
    let report = exported(&args.route, &args.out, &done);
    if to_stdout {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    Ok(())
}

fn exported(route: &str, out: &str, d: &Exported) -> String {
    if d.messages == 0 && d.left == 0 {
        return format!("nothing waits on route {route}: nothing written");
    }
    let mut line = match (&d.bundle, &d.peer) {
        (Some(id), Some(peer)) => format!(
            "bundle {id} for {peer}: {} messages, {} recipients, {} bytes ({} of mail) in {out}",
            d.messages, d.recipients, d.bytes, d.raw_bytes
        ),
        _ => format!(
            "{} messages, {} recipients, {} bytes in {out}",
            d.messages, d.recipients, d.bytes
        ),
    };
    if d.left > 0 {
        line.push_str(&format!("; {} messages left for the next one", d.left));
    }
    if d.damaged > 0 {
        line.push_str(&format!("; {} damaged messages bounced", d.damaged));
    }
    line
}

fn import(layout: &Layout, args: ImportArgs) -> Result<(), Failure> {
    let input = if args.file == "-" {
        None
    } else {
        Some(
            File::open(&args.file)
                .map_err(|e| Failure::new(exit::NOINPUT, format!("{}: {e}", args.file)))?,
        )
    };
    let receipt = args.receipt.as_deref().map(create).transpose()?;
    let stdin = std::io::stdin();
    let mut fds = vec![match &input {
        Some(f) => f.as_fd(),
        None => stdin.as_fd(),
    }];
    fds.extend(receipt.as_ref().map(|f| f.as_fd()));
    let request = Request::BundleImport {
        receipt: receipt.is_some(),
    };
    let result = ask(layout, &request, &fds);
    let done = match result {
        Ok(Response::Imported(done)) => done,
        Ok(other) => return Err(super::unexpected(other)),
        Err(e) => {
            if let Some(path) = &args.receipt {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    if let Some(path) = &args.receipt
        && done.kind != "mail"
    {
        let _ = std::fs::remove_file(path);
    }
    for line in imported(&done, args.receipt.as_deref()) {
        println!("{line}");
    }
    Ok(())
}

fn imported(d: &Imported, receipt: Option<&Path>) -> Vec<String> {
    let mut lines = Vec::new();
    if d.kind == "receipt" {
        lines.push(format!(
            "receipt from {} for bundle {}: {} delivered, {} bounced, {} not waiting here",
            d.node, d.bundle, d.delivered, d.bounced, d.unknown
        ));
    } else {
        lines.push(format!(
            "bundle {} from {}: {} messages ({} recipients) queued, {} recipients taken before, {} refused",
            d.bundle,
            d.node,
            d.messages,
            d.recipients,
            d.duplicates,
            d.refused.len()
        ));
        if let Some(path) = receipt {
            lines.push(format!("receipt written to {}", path.display()));
        }
    }
    lines.extend(d.refused.iter().map(|r| format!("refused: {r}")));
    lines.extend(d.unread.iter().map(|r| format!("not read: {r}")));
    lines
}

/// A new file for a bundle or receipt: mode 0640 (it holds mail), replacing one there.
fn create(path: &Path) -> Result<File, Failure> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Failure::new(exit::CANTCREAT, format!("{}: {e}", path.display())))
}

fn ask(
    layout: &Layout,
    request: &Request,
    files: &[std::os::fd::BorrowedFd<'_>],
) -> Result<Response, Failure> {
    let reply = client::request_with_files(&layout.control, request, files, WORK_TIMEOUT)
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    super::answer(reply)
}
