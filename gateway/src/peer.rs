//! Who sent a request: the connection's address and, over the in-process tailnet, the node
//! it came from, plus the `--tailscale-allow` list that nodes are matched against. A leaf
//! module: the front, the listeners and the tailnet all use it, and it uses none of them.
//!
//! tailscale-rs identifies peers at node level only (hostname, tags); it does not expose the
//! user behind a node, so that is all the allow-list can match on.

use std::fmt;
use std::net::SocketAddr;

/// Facts about the connection a request came on, passed to handlers as a request extension.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// Remote address as seen by the listener.
    pub addr: Option<SocketAddr>,
    /// The tailnet node the connection came from, when it came over the in-process tailnet
    /// listener and the control plane knew the peer.
    pub tailnet: Option<TailnetPeer>,
    /// The connection is TLS (what bucket policies call `aws:SecureTransport`).
    pub tls: bool,
}

impl PeerInfo {
    /// A peer known only by its address (plain TCP).
    pub fn from_addr(addr: SocketAddr) -> Self {
        PeerInfo {
            addr: Some(addr),
            tailnet: None,
            tls: false,
        }
    }
}

/// The tailnet node a connection came from, as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
