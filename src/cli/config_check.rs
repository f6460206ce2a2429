//! `ferrymail config check`: validate, load every file the configuration names (as the
//! daemon would), warn about files others may change or read, then print the effective
//! configuration (with `--quiet`, only check: systemd's ExecStartPre uses it).

use std::path::Path;

use crate::config;
use crate::daemon::prepare::{file_warnings, prepare};
use crate::exit::{self, Failure};

pub fn run(path: Option<&Path>, quiet: bool) -> Result<(), Failure> {
    let loaded = config::load(path)?;
    let file = loaded
        .source
        .as_ref()
        .map_or("built-in defaults".to_owned(), |f| f.display().to_string());
    for warning in file_warnings(&loaded.config, loaded.source.as_deref()) {
        eprintln!("ferrymail: warning: {warning}");
    }
    let prepared = prepare(loaded.config.clone())
        .map_err(|e| Failure::new(exit::CONFIG, format!("config {file}: {e}")))?;
    for warning in &prepared.warnings {
        eprintln!("ferrymail: warning: {warning}");
    }
    if quiet {
        return Ok(());
    }
    match &loaded.source {
        Some(file) => println!("# {}: ok; every default written out", file.display()),
        None => println!("# no configuration file; built-in defaults"),
    }
    print!("{}", config::to_toml(&loaded.config));
    Ok(())
}
