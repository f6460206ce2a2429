//! This node's bundle settings as the daemon uses them: its name, each peer's key
//! (read from its file when the configuration is loaded, so a missing or short key is
//! a configuration error, not a failed import days later), the routes exported for each
//! peer, and the times.

use std::time::Duration;

use super::format::Key;
use crate::config::Config;

pub struct Peers {
    /// This node's name.
    pub node: String,
    pub peers: Vec<Peer>,
    pub resend_after: Duration,
    pub max_age: Duration,
}

pub struct Peer {
    pub node: String,
    pub key: Key,
    pub routes: Vec<String>,
}

impl Peers {
    pub fn load(config: &Config) -> Result<Peers, String> {
        let peers = config
            .bundle_peer
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(Peer {
                    node: p.node.to_ascii_lowercase(),
                    key: super::key::read(&p.key_file)
                        .map_err(|e| format!("bundle_peer[{i}].key_file {e}"))?,
                    routes: p.routes.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Peers {
            node: config.bundle.node.to_ascii_lowercase(),
            peers,
            resend_after: config.bundle.resend_after.0,
            max_age: config.bundle.max_age.0,
        })
    }

    pub fn by_node(&self, node: &str) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|p| p.node.eq_ignore_ascii_case(node))
    }

    pub fn for_route(&self, route: &str) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|p| p.routes.iter().any(|r| r == route))
    }
}
