//! `ferrymail serve`: logging, signals, and the daemon until SIGTERM or SIGINT.

use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Log lines as text (coloured on a terminal unless NO_COLOR is set) or as JSON
    /// objects, one a line, for log shippers
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(config: Option<&Path>, args: ServeArgs) -> Result<(), Failure> {
    let loaded = crate::config::load(config)?;
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
        let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            trigger.cancel();
        });
        tracing::info!(
            config = %loaded.source.as_ref().map_or("built-in defaults".into(), |p| p.display().to_string()),
            "starting"
        );
        crate::daemon::run(loaded.config, loaded.source, shutdown).await
    })
}

fn signal_error(e: std::io::Error) -> Failure {
    Failure::new(
        exit::SOFTWARE,
        format!("cannot install signal handlers: {e}"),
    )
}

/// Logs to stderr; `FERRYMAIL_LOG` sets the filter (e.g. `debug`, `ferrymail=trace`).
fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter: Targets = std::env::var("FERRYMAIL_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        // An operator reads the text: no module paths (`FERRYMAIL_LOG` still filters
        // by them); the JSON keeps them for machines.
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_ansi(ansi).with_target(false))
            .with(filter)
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_current_span(false))
            .with(filter)
            .try_init(),
    };
}
