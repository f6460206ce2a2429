//! Configuration: where it is read from, the built-in defaults that make a file optional,
//! and `validate()`. Every error is one line naming the file, the key path and the fault.
//! Relative paths in a file are taken relative to that file's directory.

mod net;
mod schema;
mod units;
mod validate;

use std::path::{Path, PathBuf};

pub use net::IpNet;
pub use schema::*;
pub use units::{ByteSize, HumanDuration};
pub use validate::{domain_matches, is_domain, mx_port, parse_window};

/// The system-wide file, used when neither `--config` nor `$FERRYMAIL_CONFIG` names one.
pub const SYSTEM_CONFIG: &str = "/etc/ferrymail/ferrymail.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config {file}{line}: {path}{message}")]
    Invalid {
        file: String,
        /// `:LINE` when known, else empty.
        line: String,
        /// `key.path: ` when known, else empty.
        path: String,
        message: String,
    },
}

impl ConfigError {
    fn invalid(file: &str, path: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            line: String::new(),
            path: if path.is_empty() {
                String::new()
            } else {
                format!("{path}: ")
            },
            message: message.into(),
        }
    }
}

/// The configuration in force and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file read, or `None` for built-in defaults.
    pub source: Option<PathBuf>,
}

/// Finds and loads the configuration: `explicit`, else `$FERRYMAIL_CONFIG`, else the
/// system file if present, else built-in defaults.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    let chosen = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("FERRYMAIL_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()));
    match chosen {
        Some(file) => {
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            let config = parse(&text, &file)?;
            Ok(Loaded {
                config,
                source: Some(file),
            })
        }
        None => {
            let mut config = Config::default();
            fill_defaults(&mut config);
            Ok(Loaded {
                config,
                source: None,
            })
        }
    }
}

/// Parses and validates one file's text; `file` names it in errors and anchors relative paths.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let name = file.display().to_string();
    let de = toml::de::Deserializer::parse(text).map_err(|e| toml_error(&name, text, "", &e))?;
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        toml_error(&name, text, &path, e.inner())
    })?;
    // Paths are shown and used whole: relative to the file's directory, made absolute.
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    anchor_paths(&mut config, &base);
    fill_defaults(&mut config);
    validate::validate(&config)
        .map_err(|(path, message)| ConfigError::invalid(&name, &path, message))?;
    Ok(config)
}

fn toml_error(file: &str, text: &str, path: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|span| {
            format!(
                ":{}",
                text[..span.start.min(text.len())].lines().count().max(1)
            )
        })
        .unwrap_or_default();
    let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
    ConfigError::Invalid {
        file: file.to_owned(),
        line,
        path: if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        },
        message: message.to_owned(),
    }
}

fn anchor_paths(config: &mut Config, base: &Path) {
    let anchor = |p: &mut PathBuf| {
        if p.is_relative() && !p.as_os_str().is_empty() {
            *p = base.join(&*p);
        }
    };
    if !config.spool.as_os_str().is_empty() {
        anchor(&mut config.spool);
    }
    if let Some(tls) = &mut config.tls {
        anchor(&mut tls.cert);
        anchor(&mut tls.key);
    }
    if let Some(users) = &mut config.accept.users {
        anchor(users);
    }
    if let Some(up) = &mut config.upstream {
        up.ca.as_mut().map(anchor);
        up.password_file.as_mut().map(anchor);
    }
    if let Some(t) = &mut config.link.trigger_file {
        anchor(t);
    }
}

/// Fills the values whose defaults depend on the machine: hostname and spool.
fn fill_defaults(config: &mut Config) {
    if config.hostname.is_empty() {
        config.hostname = system_hostname();
    }
    if config.spool.as_os_str().is_empty() {
        config.spool = default_spool();
    }
}

fn system_hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// `/var/spool/ferrymail` as root; else `$XDG_STATE_HOME/ferrymail`, falling back to
/// `~/.local/state/ferrymail` as the XDG base directory spec says.
pub fn default_spool() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/spool/ferrymail");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("ferrymail")
}

/// The effective configuration as TOML, every default written out.
pub fn to_toml(config: &Config) -> String {
    toml::to_string(config).expect("configuration serialises")
}
