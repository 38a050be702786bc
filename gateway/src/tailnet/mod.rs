//! The tailnet side of the gateway: who a tailnet peer is (node hostname and tags), the
//! `--tailscale-allow` list, and, with the `tailscale` cargo feature, joining a tailnet
//! in-process through tailscale-rs and serving the same [`Front`](crate::front::Front) on it.
//!
//! tailscale-rs identifies peers at node level only (hostname, tags); it does not expose the
//! user behind a node, so that is all the allow-list can match on.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "tailscale")]
mod device;
#[cfg(feature = "tailscale")]
pub use device::{Tailnet, join};
#[cfg(not(feature = "tailscale"))]
pub use disabled::{Tailnet, join};

/// True when this binary was built with the `tailscale` feature (in-process tailnet support).
pub const SUPPORTED: bool = cfg!(feature = "tailscale");

/// The tailnet node a connection came from, as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TailnetPeer {
    /// The node's hostname on the tailnet (the first label of its MagicDNS name).
    pub hostname: String,
    /// ACL tags of the node (`tag:NAME`); empty for a user's own machine.
    pub tags: Vec<String>,
}

impl fmt::Display for TailnetPeer {
    /// `laptop` or `server[tag:media,tag:prod]`, as it appears in the request log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hostname)?;
        if !self.tags.is_empty() {
            write!(f, "[{}]", self.tags.join(","))?;
        }
        Ok(())
    }
}

/// An entry of `--tailscale-allow` that cannot be a hostname or a tag.
#[derive(Debug, thiserror::Error)]
#[error(
    "--tailscale-allow: {entry:?} is neither a bare tailnet hostname nor a tag (tag:NAME); use a comma-separated list such as laptop,tag:media"
)]
pub struct AllowListError {
    entry: String,
}

/// `--tailscale-allow`: the tailnet nodes that may use the gateway, by hostname or by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// Bare hostnames, lower-cased (DNS names compare case-insensitively).
    hostnames: Vec<String>,
    /// Tags including their `tag:` prefix, compared exactly.
    tags: Vec<String>,
}

impl AllowList {
    /// Parses `host-or-tag,...`; an empty or blank value means no restriction (`None`).
    pub fn parse(value: &str) -> Result<Option<AllowList>, AllowListError> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        let mut list = AllowList {
            hostnames: Vec::new(),
            tags: Vec::new(),
        };
        for raw in value.split(',') {
            let entry = raw.trim();
            let bad = || AllowListError {
                entry: entry.to_owned(),
            };
            let valid_name = |s: &str| {
                !s.is_empty()
                    && s.len() <= 253
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            };
            if let Some(tag) = entry.strip_prefix("tag:") {
                if !valid_name(tag) {
                    return Err(bad());
                }
                list.tags.push(entry.to_owned());
            } else {
                // A trailing dot (`laptop.`) is how fully qualified names are sometimes written;
                // anything with an inner dot is a MagicDNS name, which peers are not matched by.
                let host = entry.strip_suffix('.').unwrap_or(entry);
                if !valid_name(host) {
                    return Err(bad());
                }
                list.hostnames.push(host.to_ascii_lowercase());
            }
        }
        Ok(Some(list))
    }

    /// True when the node's hostname or any of its tags is listed.
    pub fn permits(&self, peer: &TailnetPeer) -> bool {
        self.hostnames
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&peer.hostname))
            || peer.tags.iter().any(|t| self.tags.contains(t))
    }
}

/// What joining a tailnet needs (from `--tailscale` and the `--ts-*` settings). Not `Debug`:
/// it holds the auth key, which must not end up in a log.
#[derive(Clone)]
pub struct TailnetConfig {
    /// Auth key for the first registration; a registered node can restart without one.
    pub auth_key: Option<String>,
    /// Hostname the node asks for.
    pub hostname: String,
    /// Control server (default: Tailscale's).
    pub control_url: Option<String>,
    /// Bound on each wait for the control plane (joining, our address, peer lookups).
    pub timeout: Duration,
    /// Folder for the node's key file (`DATA/.nebula/tailscale`), kept private.
    pub state_dir: PathBuf,
    /// Port to listen on at the tailnet address.
    pub port: u16,
    /// `--tailscale-allow` is set: a peer the control plane cannot identify is refused.
    pub restricted: bool,
}

/// Why the gateway could not join its tailnet.
#[derive(Debug, thiserror::Error)]
pub enum TailnetError {
    /// The binary has no in-process tailnet support.
    #[error(
        "--tailscale: this nebula-gateway was built without tailscale support; rebuild with `cargo build --release --features tailscale`"
    )]
    NotCompiledIn,
    /// The state folder or key file could not be prepared.
    #[error("tailnet state in {path}: {source}")]
    State {
        /// The folder or file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// `--ts-control-url` is not a URL.
    #[error("--ts-control-url {url:?} is not a valid URL: {reason}")]
    ControlUrl {
        /// The value given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// tailscale-rs reported an error.
    #[error("tailnet: {what} failed: {reason}")]
    Device {
        /// The step that failed.
        what: &'static str,
        /// tailscale-rs's error.
        reason: String,
    },
    /// A step that needs the control server did not finish in time.
    #[error(
        "tailnet: {what} did not finish within {secs} s: control server {url} unreachable, or the auth key was refused (see the log above; raise --ts-timeout-secs for slow networks)"
    )]
    Timeout {
        /// The step that timed out.
        what: &'static str,
        /// The control server used.
        url: String,
        /// The bound.
        secs: u64,
    },
}

/// Without the `tailscale` feature: the same API, where joining says how to get the support.
#[cfg(not(feature = "tailscale"))]
mod disabled {
    use std::future::Future;
    use std::net::SocketAddr;

    use hyper_util::server::graceful::GracefulShutdown;

    use super::{TailnetConfig, TailnetError};
    use crate::front::Front;

    /// A joined tailnet node; no value exists in a build without the `tailscale` feature.
    pub enum Tailnet {}

    /// Always [`TailnetError::NotCompiledIn`].
    pub async fn join(_cfg: &TailnetConfig) -> Result<Tailnet, TailnetError> {
        Err(TailnetError::NotCompiledIn)
    }

    impl Tailnet {
        /// The tailnet address and port the gateway listens on.
        pub fn local_addr(&self) -> SocketAddr {
            match *self {}
        }

        /// The node's MagicDNS name.
        pub fn name(&self) -> &str {
            match *self {}
        }

        /// Accepts tailnet connections until `stop` resolves.
        pub async fn accept(
            &self,
            _front: Front,
            _graceful: &GracefulShutdown,
            _stop: impl Future<Output = ()>,
        ) {
            match *self {}
        }

        /// Leaves the tailnet.
        pub async fn shutdown(self) {
            match self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(host: &str, tags: &[&str]) -> TailnetPeer {
        TailnetPeer {
            hostname: host.to_owned(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn empty_allow_list_is_no_restriction() {
        assert_eq!(AllowList::parse("").unwrap(), None);
        assert_eq!(AllowList::parse("  ").unwrap(), None);
    }

    #[test]
    fn allow_by_hostname_or_tag() {
        let allow = AllowList::parse("laptop, tag:media ,Phone.")
            .unwrap()
            .unwrap();
        assert!(allow.permits(&peer("laptop", &[])));
        assert!(allow.permits(&peer("LAPTOP", &[])));
        assert!(allow.permits(&peer("phone", &[])));
        assert!(allow.permits(&peer("tv", &["tag:other", "tag:media"])));
        assert!(!allow.permits(&peer("tv", &["tag:other"])));
        assert!(!allow.permits(&peer("laptop2", &[])));
        // A hostname entry never matches a tag of the same name, nor the reverse.
        assert!(!allow.permits(&peer("media", &[])));
        assert!(!allow.permits(&peer("x", &["tag:laptop"])));
        // Tags compare exactly.
        assert!(!allow.permits(&peer("tv", &["tag:Media"])));
    }

    #[test]
    fn allow_list_rejects_malformed_entries() {
        for bad in [
            "laptop,,tv",
            "tag:",
            "a b",
            "laptop.tail1234.ts.net",
            ",",
            "tag:a/b",
        ] {
            let e = AllowList::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--tailscale-allow"), "{bad}: {e}");
        }
    }

    #[test]
    fn peer_display_for_the_log() {
        assert_eq!(peer("laptop", &[]).to_string(), "laptop");
        assert_eq!(
            peer("srv", &["tag:a", "tag:b"]).to_string(),
            "srv[tag:a,tag:b]"
        );
    }
}
