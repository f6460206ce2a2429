//! The command line: argv[0] picks the personality (`ferrymail`, `sendmail`, `mailq`,
//! `rmail`),
//! clap parses `ferrymail`'s subcommands, and each subcommand lives in its own file,
//! thin over the library. Every command returns `Result<(), Failure>`; `main` prints
//! the failure as one line and exits with its sysexits code.

mod bundle;
mod config_check;
mod dkim;
mod flush;
mod hash_password;
pub mod man;
mod queue;
mod rmail;
pub mod sendmail;
mod serve;
mod status;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Loaded};
use crate::exit::{self, Failure};

#[derive(Parser, Debug)]
#[command(
    name = "ferrymail",
    version,
    about = "Store-and-forward SMTP relay for intermittent links"
)]
pub struct Cli {
    /// Configuration file (default: $FERRYMAIL_CONFIG, else ~/.config/ferrymail/ferrymail.toml
    /// for a user other than root, else /etc/ferrymail/ferrymail.toml, each if present,
    /// else built-in defaults)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground
    Serve(serve::ServeArgs),
    /// Inject a message from stdin (sendmail flags: -t -i -oi -f ADDR -F NAME -bm -bp -q -qR DOMAIN)
    Send {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// List the queue, or act on queued messages
    Queue(queue::QueueArgs),
    /// Ask the daemon to deliver what is due now
    Flush(flush::FlushArgs),
    /// Show the daemon's state and queue counts
    Status(status::StatusArgs),
    /// Configuration commands
    Config(ConfigArgs),
    /// Read a password on stdin and print its hash for an `accept.users` line
    HashPassword,
    /// DKIM signing keys
    Dkim(DkimArgs),
    /// Mail without a network: export, import and receipts, keys
    Bundle(bundle::BundleArgs),
    /// Write the manual pages: ferrymail(8) and its subcommands, sendmail(8), mailq(1),
    /// ferrymail.toml(5)
    Man {
        /// Where to write them, in section directories (man1, man5, man8), as
        /// /usr/local/share/man wants them
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Print shell completions for ferrymail
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct DkimArgs {
    #[command(subcommand)]
    pub command: DkimCommand,
}

#[derive(Subcommand, Debug)]
pub enum DkimCommand {
    /// Write a new signing key and print the DNS record that publishes it
    Keygen(dkim::KeygenArgs),
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with every default filled in
    Check {
        /// Only validate: print nothing unless it is wrong
        #[arg(long)]
        quiet: bool,
    },
}

/// Runs the program for `argv`; returns the exit code.
pub fn main(argv: Vec<OsString>) -> u8 {
    let personality = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = match personality.as_str() {
        "sendmail" => sendmail::run(&argv[1..], None),
        "rmail" => rmail::run(&argv[1..], None),
        "mailq" => queue::list(None, false),
        _ => match Cli::try_parse_from(&argv) {
            Ok(cli) => dispatch(cli),
            Err(e) => {
                let code = if e.use_stderr() {
                    exit::USAGE
                } else {
                    exit::OK
                };
                let _ = e.print();
                return code;
            }
        },
    };
    match result {
        Ok(()) => exit::OK,
        Err(failure) => {
            eprintln!("{personality}: {}", failure.message);
            failure.code
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => serve::run(config, args),
        Command::Send { args } => sendmail::run(&args, config),
        Command::Queue(args) => queue::run(config, args),
        Command::Flush(args) => flush::run(config, args),
        Command::Status(args) => status::run(config, args),
        Command::Config(ConfigArgs {
            command: ConfigCommand::Check { quiet },
        }) => config_check::run(config, quiet),
        Command::HashPassword => hash_password::run(),
        Command::Bundle(args) => bundle::run(config, args),
        Command::Dkim(DkimArgs {
            command: DkimCommand::Keygen(args),
        }) => dkim::keygen(args),
        Command::Man { dir } => {
            for page in man::write_pages(&dir)? {
                println!("{}", page.display());
            }
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ferrymail",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// A daemon's reply, with its error reply turned into the failure it names.
pub(crate) fn answer(reply: crate::control::Response) -> Result<crate::control::Response, Failure> {
    match reply {
        crate::control::Response::Error { message, code } => Err(Failure::new(code, message)),
        other => Ok(other),
    }
}

/// A reply of the wrong kind: the CLI and the daemon disagree.
pub(crate) fn unexpected(reply: crate::control::Response) -> Failure {
    Failure::new(exit::SOFTWARE, format!("unexpected reply: {reply:?}"))
}

/// The configuration for a command that talks to a daemon or its spool.
pub(crate) fn load_config(path: Option<&Path>) -> Result<Loaded, Failure> {
    Ok(config::load_as(path, config::Role::Client)?)
}
