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
pub use validate::{BUNDLE_VIA, ODMR_VIA};
pub(crate) use validate::{domain_matches, mx_port, parse_window};

/// The system-wide file, used when neither `--config` nor `$FERRYMAIL_CONFIG` names one.
pub const SYSTEM_CONFIG: &str = "/etc/ferrymail/ferrymail.toml";
/// The system's spool: a root daemon's default.
pub const SYSTEM_SPOOL: &str = "/var/spool/ferrymail";

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
    /// `spool` was not set: it is the built-in default.
    pub default_spool: bool,
}

/// Who loads the configuration: the daemon, or a command that talks to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Daemon,
    Client,
}

/// Finds and loads the configuration: `explicit`, else `$FERRYMAIL_CONFIG`, else (not
/// as root) the user's own file if present, else the system file if present, else
/// built-in defaults. For a `Client` that is not root and has no `spool` set, the spool
/// is the system's when one is set up there, unless the user's own daemon runs
/// (`client_spool`): a user's `sendmail` reaches the system's daemon, as Postfix's
/// postdrop does, and their own daemon when they run one.
pub(crate) fn load_as(explicit: Option<&Path>, role: Role) -> Result<Loaded, ConfigError> {
    let root = rustix::process::geteuid().is_root();
    let chosen = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("FERRYMAIL_CONFIG").map(PathBuf::from))
        .or_else(|| user_config().filter(|p| !root && p.exists()))
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()));
    let (mut config, source) = match chosen {
        Some(file) => {
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            (parse_unfilled(&text, &file)?, Some(file))
        }
        None => (Config::default(), None),
    };
    let default_spool = config.spool.as_os_str().is_empty();
    fill_defaults(&mut config);
    if default_spool && role == Role::Client && !root {
        config.spool = client_spool(&config.spool);
    }
    Ok(Loaded {
        config,
        source,
        default_spool,
    })
}

/// `load_as` for the daemon.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_as(explicit, Role::Daemon)
}

/// `$XDG_CONFIG_HOME/ferrymail/ferrymail.toml`, else `~/.config/ferrymail/ferrymail.toml`:
/// the file a user's own daemon reads (contrib/systemd/user).
fn user_config() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|dir| dir.join("ferrymail/ferrymail.toml"))
}

/// The spool a user's command uses when none is configured: their own (`own`) while
/// their daemon runs there (its control socket is present), else the system's when its
/// maildrop is set up, else their own.
fn client_spool(own: &Path) -> PathBuf {
    client_spool_between(own, Path::new(SYSTEM_SPOOL))
}

fn client_spool_between(own: &Path, system: &Path) -> PathBuf {
    if own.join("control.sock").exists() || !system.join("maildrop/new").exists() {
        own.to_path_buf()
    } else {
        system.to_path_buf()
    }
}

/// Parses and validates one file's text; `file` names it in errors and anchors relative paths.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut config = parse_unfilled(text, file)?;
    fill_defaults(&mut config);
    Ok(config)
}

/// `parse`, leaving unset what the running system decides (hostname, spool).
fn parse_unfilled(text: &str, file: &Path) -> Result<Config, ConfigError> {
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
    let mut checked = config.clone();
    fill_defaults(&mut checked);
    validate::validate(&checked)
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
    if let Some(f) = &mut config.local.aliases_file {
        anchor(f);
    }
    for d in &mut config.dkim {
        anchor(&mut d.key);
    }
    for u in &mut config.odmr_user {
        anchor(&mut u.password_file);
    }
    if let Some(o) = &mut config.odmr {
        anchor(&mut o.password_file);
    }
    for p in &mut config.bundle_peer {
        anchor(&mut p.key_file);
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
    if config.bundle.node.is_empty() {
        config.bundle.node = config.hostname.clone();
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
fn default_spool() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from(SYSTEM_SPOOL);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("ferrymail")
}

/// The effective configuration as TOML, every default written out.
pub(crate) fn to_toml(config: &Config) -> String {
    toml::to_string(config).expect("configuration serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_commands_reach_the_system_spool_unless_their_own_daemon_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (own, system) = (dir.path().join("own"), dir.path().join("system"));
        assert_eq!(client_spool_between(&own, &system), own, "no system spool");
        std::fs::create_dir_all(system.join("maildrop/new")).unwrap();
        assert_eq!(client_spool_between(&own, &system), system);
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("control.sock"), "").unwrap();
        assert_eq!(
            client_spool_between(&own, &system),
            own,
            "their daemon runs"
        );
    }
}
