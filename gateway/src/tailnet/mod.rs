//! Joining a tailnet in-process (cargo feature `tailscale`, through tailscale-rs) and serving
//! the same [`Front`](crate::front::Front) on it. Who a tailnet peer is and the
//! `--tailscale-allow` list live in [`crate::peer`].

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
