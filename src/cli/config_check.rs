//! `ferrymail config check`: validate, then print the effective configuration (with
//! `--quiet`, only validate: systemd's ExecStartPre uses it).

use std::path::Path;

use crate::config;
use crate::exit::Failure;

pub fn run(path: Option<&Path>, quiet: bool) -> Result<(), Failure> {
    let loaded = super::load_config(path)?;
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
