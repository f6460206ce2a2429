//! How we talk to each route's upstream, prepared once at start: our EHLO name, the TLS
//! policy, the certificates we trust (`[upstream] ca`, else the system's roots, which
//! honour `SSL_CERT_FILE`), and the smarthost's credentials from `password_file`.

use std::collections::HashMap;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::client::{ClientSettings, ClientTimeouts};
use crate::config::Config;

/// Client settings by route name, for every route that relays.
pub fn client_settings(config: &Config) -> Result<HashMap<String, ClientSettings>, String> {
    let roots = Arc::new(trust_roots(config)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.as_ref().clone())
            .with_no_client_auth(),
    );
    let credentials = match &config.upstream {
        Some(up) => match (&up.username, &up.password_file) {
            (Some(user), Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("upstream.password_file {}: {e}", file.display()))?;
                Some((user.clone(), text.trim_end_matches(['\r', '\n']).to_owned()))
            }
            _ => None,
        },
        None => None,
    };
    let make = |tls, creds: Option<(String, String)>| ClientSettings {
        helo: config.hostname.clone(),
        tls,
        tls_config: tls_config.clone(),
        credentials: creds,
        use_chunking: true,
        timeouts: ClientTimeouts::default(),
    };
    let mut out = HashMap::new();
    for (i, r) in config.route.iter().enumerate() {
        out.insert(format!("route[{i}]"), make(r.tls, None));
    }
    if let Some(up) = &config.upstream {
        out.insert("upstream".to_owned(), make(up.tls, credentials));
    }
    Ok(out)
}

fn trust_roots(config: &Config) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = config.upstream.as_ref().and_then(|u| u.ca.as_ref()) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("upstream.ca {}: {e}", ca.display()))?;
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
