//! What the daemon derives from a configuration before running it, at start and at each
//! reload: every step that reads a file or can fail — the server certificate and key,
//! the AUTH users, each route's client settings with the CA and the smarthost's
//! password, the aliases file — is done here, so a configuration that cannot run is refused whole (a
//! reload keeps the one in force). `config check` runs the same steps, and also warns
//! about files others may write or read, as `postfix check` does.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::client::ClientSettings;
use crate::delivery::route::Router;
use crate::delivery::settings::client_settings;
use crate::identity::Identity;
use crate::server::auth::Users;
use crate::server::tls::TlsError;
use crate::server::{AuthContext, ServerTls};

/// A configuration with everything it needs loaded.
pub struct Prepared {
    pub config: Config,
    /// The certificate, when `[tls]` is set.
    pub tls: Option<Arc<ServerTls>>,
    /// AUTH credentials, when `accept.users` is set.
    pub auth: Option<Arc<AuthContext>>,
    pub router: Router,
    /// How to talk to each route's upstream, by route name.
    pub settings: HashMap<String, ClientSettings>,
    /// Local names, aliases and sender rewriting.
    pub identity: Arc<Identity>,
    /// ODMR stations' accounts.
    pub odmr_users: crate::server::turns::OdmrUsers,
    /// This station's ODMR secret (`[odmr] password_file`).
    pub odmr_secret: String,
    /// This node's bundle peers, with their keys.
    pub bundle_peers: Arc<crate::bundle::peers::Peers>,
    /// What loading left out (aliases the relay cannot deliver to), for the log.
    pub warnings: Vec<String>,
}

/// Loads what `config` names; the error is one line naming the key and the file.
pub(crate) fn prepare(config: Config) -> Result<Prepared, String> {
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(ServerTls::load(&t.cert, &t.key).map_err(
            |e| match e {
                TlsError::File { path, message } => {
                    let key = if path == t.cert {
                        "tls.cert"
                    } else {
                        "tls.key"
                    };
                    format!("{key} {}: {message}", path.display())
                }
                TlsError::Rustls(e) => format!("tls: certificate and key: {e}"),
            },
        )?)),
        None => None,
    };
    let auth = match &config.accept.users {
        Some(path) => Some(Arc::new(AuthContext::new(
            Users::load(path).map_err(|e| format!("accept.users {e}"))?,
        ))),
        None => None,
    };
    let router = Router::from_config(&config);
    let settings = client_settings(&config, &router)?;
    let (identity, warnings) = Identity::load(&config)?;
    let odmr_users = crate::server::turns::OdmrUsers::load(&config)?;
    let odmr_secret = match &config.odmr {
        Some(o) => std::fs::read_to_string(&o.password_file)
            .map_err(|e| format!("odmr.password_file {}: {e}", o.password_file.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        None => String::new(),
    };
    let bundle_peers = Arc::new(crate::bundle::peers::Peers::load(&config)?);
    Ok(Prepared {
        bundle_peers,
        config,
        tls,
        auth,
        router,
        settings,
        identity: Arc::new(identity),
        odmr_users,
        odmr_secret,
        warnings,
    })
}

/// Files of `config` (and the configuration file itself, `source`) that others may
/// change or read: one line each, for the log and `config check`.
pub(crate) fn file_warnings(config: &Config, source: Option<&Path>) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, path: &Path, secret: bool| {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.mode();
        if mode & 0o002 != 0 {
            out.push(format!(
                "{what} {} is writable by every user: anyone can change how mail is handled",
                path.display()
            ));
        }
        if secret && mode & 0o004 != 0 {
            out.push(format!(
                "{what} {} is readable by every user: keep secrets mode 0600 or 0640",
                path.display()
            ));
        }
    };
    if let Some(file) = source {
        check("the configuration", file, false);
    }
    if let Some(t) = &config.tls {
        check("tls.cert", &t.cert, false);
        check("tls.key", &t.key, true);
    }
    if let Some(users) = &config.accept.users {
        check("accept.users", users, true);
    }
    if let Some(aliases) = &config.local.aliases_file {
        check("local.aliases_file", aliases, false);
    }
    for (i, d) in config.dkim.iter().enumerate() {
        check(&format!("dkim[{i}].key"), &d.key, true);
    }
    for (i, u) in config.odmr_user.iter().enumerate() {
        check(
            &format!("odmr_user[{i}].password_file"),
            &u.password_file,
            true,
        );
    }
    if let Some(o) = &config.odmr {
        check("odmr.password_file", &o.password_file, true);
    }
    for (i, p) in config.bundle_peer.iter().enumerate() {
        check(&format!("bundle_peer[{i}].key_file"), &p.key_file, true);
    }
    if let Some(up) = &config.upstream {
        if let Some(ca) = &up.ca {
            check("upstream.ca", ca, false);
        }
        if let Some(password) = &up.password_file {
            check("upstream.password_file", password, true);
        }
    }
    out
}
