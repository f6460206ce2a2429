//! How we talk to each route's upstream, prepared once at start: our EHLO name, the TLS
//! policy, the certificates we trust (`[upstream] ca`, else the system's roots, which
//! honour `SSL_CERT_FILE`), and the smarthost's credentials from `password_file`.
//! Opportunistic TLS without credentials encrypts without verifying (`opportunistic`);
//! everything else verifies.

use std::collections::HashMap;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::client::{ClientSettings, ClientTimeouts};
use super::route::{Router, Target};
use crate::config::{Config, TlsPolicy};

/// Client settings by route name, for every route of `router`; TLS policy and whether
/// to authenticate come from the route itself.
pub(crate) fn client_settings(
    config: &Config,
    router: &Router,
) -> Result<HashMap<String, ClientSettings>, String> {
    let tls_config = tls_client_config(trust_roots(config)?)?;
    let unverified = super::opportunistic::unauthenticated_client_config()?;
    let credentials = match config
        .upstream
        .as_ref()
        .map(|u| (&u.username, &u.password_file))
    {
        Some((Some(user), Some(file))) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("upstream.password_file {}: {e}", file.display()))?;
            Some((user.clone(), text.trim_end_matches(['\r', '\n']).to_owned()))
        }
        _ => None,
    };
    let mut out = HashMap::new();
    for route in router.routes() {
        let (tls, authenticated) = match &route.target {
            Target::Relay {
                tls, authenticated, ..
            } => (*tls, *authenticated),
            Target::Mx { tls, .. } => (*tls, false),
            // Turns use the station's own connection (daemon::odmr).
            Target::Odmr => (TlsPolicy::None, false),
            Target::Bundle => (TlsPolicy::None, false),
        };
        let credentials = if authenticated {
            credentials.clone()
        } else {
            None
        };
        let settings = ClientSettings {
            helo: config.hostname.clone(),
            tls,
            tls_config: if tls == TlsPolicy::Opportunistic && credentials.is_none() {
                unverified.clone()
            } else {
                tls_config.clone()
            },
            credentials,
            use_chunking: true,
            ferry: route.ferry,
            timeouts: ClientTimeouts::default(),
        };
        out.insert(route.name.clone(), settings);
    }
    Ok(out)
}

/// A rustls client configuration (ring provider, safe protocol versions) trusting `roots`.
pub fn tls_client_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn trust_roots(config: &Config) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = config.upstream.as_ref().and_then(|u| u.ca.as_ref()) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("upstream.ca {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "upstream.ca {}: no certificate in the file",
                ca.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("upstream.ca {}: {e}", ca.display()))?;
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        tracing::warn!(
            "no system CA certificates found: TLS to upstreams cannot be verified (set upstream.ca)"
        );
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_routes() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["hub.test".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
        let text = "spool = \"/s\"\n[upstream]\nsmarthost = \"hub.test:587\"\nca = \"ca.pem\"\nusername = \"edge\"\npassword_file = \"secret\"\n\
                    [[route]]\ndomains = [\"a.example\"]\nvia = \"10.0.0.2:25\"\ntls = \"none\"\n\
                    [[route]]\ndomains = [\"b.example\"]\n";
        let config = crate::config::parse(text, &dir.path().join("f.toml")).unwrap();
        let router = Router::from_config(&config);
        let settings = client_settings(&config, &router).unwrap();
        let mut names: Vec<&str> = settings.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["a.example", "b.example", "upstream"]);
        assert_eq!(
            settings["upstream"].credentials,
            Some(("edge".into(), "s3cret".into()))
        );
        assert_eq!(
            settings["a.example"].credentials, None,
            "credentials only for the smarthost"
        );
        assert_eq!(settings["a.example"].tls, crate::config::TlsPolicy::None);

        std::fs::remove_file(dir.path().join("secret")).unwrap();
        let err = client_settings(&config, &router).err().unwrap();
        assert!(err.starts_with("upstream.password_file"), "{err}");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        let err = client_settings(&config, &router).err().unwrap();
        assert!(err.contains("no certificate in the file"), "{err}");
    }
}
