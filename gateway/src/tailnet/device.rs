//! Joining a tailnet in-process with tailscale-rs and serving on its userspace network stack.
//!
//! Every call that waits for the control plane is bounded: in tailscale-rs 0.6.1 an
//! unreachable control server makes `Device::new` (and the address and peer lookups) wait
//! forever instead of failing.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tailscale::config::BadFormatBehavior;
use tailscale::netstack::TcpListener;

use super::{TailnetConfig, TailnetError};
use crate::front::Front;
use crate::peer::{PeerInfo, TailnetPeer};
use crate::server::serve_watched;

/// The node's key file (machine and node keys: its identity) in the state folder.
const KEY_FILE: &str = "keys.json";

/// How long shutdown gives tailscale-rs to say goodbye to the control server.
const DEVICE_SHUTDOWN: Duration = Duration::from_secs(5);

/// A node joined to the tailnet, listening on its tailnet address.
pub struct Tailnet {
    device: Arc<tailscale::Device>,
    listener: TcpListener,
    name: String,
    timeout: Duration,
    restricted: bool,
}

/// Runs `fut` (a tailscale-rs call that may wait for the control plane) within the bound.
async fn bounded<T>(
    cfg: &TailnetConfig,
    url: &str,
    what: &'static str,
    fut: impl Future<Output = Result<T, tailscale::Error>>,
) -> Result<T, TailnetError> {
    match tokio::time::timeout(cfg.timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(TailnetError::Device {
            what,
            reason: e.to_string(),
        }),
        Err(_) => Err(TailnetError::Timeout {
            what,
            url: url.to_owned(),
            secs: cfg.timeout.as_secs(),
        }),
    }
}

/// Creates the state folder private (0700, tightened if it exists looser) and returns the key
/// file's path. tailscale-rs writes the key file world-readable; inside this folder nobody
/// else can reach it even before [`join`] narrows its own mode.
fn prepare_state(dir: &Path) -> Result<PathBuf, TailnetError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| TailnetError::State { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    Ok(dir.join(KEY_FILE))
}

/// Joins the tailnet and listens on `(tailnet IPv4, cfg.port)`. Each step is bounded by
/// `cfg.timeout`; a control server that cannot be reached gives [`TailnetError::Timeout`].
pub async fn join(cfg: &TailnetConfig) -> Result<Tailnet, TailnetError> {
    let key_file = prepare_state(&cfg.state_dir)?;
    let key_state = tailscale::config::load_key_file(&key_file, BadFormatBehavior::Error)
        .await
        .map_err(|e| TailnetError::Device {
            what: "loading the node key file",
            reason: format!("{e} ({})", key_file.display()),
        })?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).map_err(
        |source| TailnetError::State {
            path: key_file.clone(),
            source,
        },
    )?;
    let mut config = tailscale::Config {
        key_state,
        requested_hostname: Some(cfg.hostname.clone()),
        client_name: Some("nebula-gateway".to_owned()),
        ..Default::default()
    };
    if let Some(url) = &cfg.control_url {
        config.control_server_url =
            url.parse()
                .map_err(|e: url::ParseError| TailnetError::ControlUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
    }
    let url = config.control_server_url.to_string();
    tracing::info!(control = %url, hostname = %cfg.hostname, timeout_secs = cfg.timeout.as_secs(), "tailnet: joining");
    let device = bounded(
        cfg,
        &url,
        "joining the tailnet",
        tailscale::Device::new(&config, cfg.auth_key.clone()),
    )
    .await?;
    let ip = match bounded(
        cfg,
        &url,
        "getting the node's tailnet address",
        device.ipv4_addr(),
    )
    .await
    {
        Ok(ip) => ip,
        Err(e) => {
            // An unregistered node without (or with a spent) auth key never gets an address;
            // say so instead of a bare timeout when control tells us.
            let auth = tokio::time::timeout(Duration::from_secs(2), device.is_authorized()).await;
            if let Ok(Ok(tailscale::AuthState::NotAuthorized(login))) = auth {
                return Err(TailnetError::Device {
                    what: "registering the node",
                    reason: format!(
                        "not authorized: set TS_AUTHKEY to a valid auth key, or approve the node at {login}"
                    ),
                });
            }
            return Err(e);
        }
    };
    let listener = bounded(
        cfg,
        &url,
        "listening on the tailnet address",
        device.tcp_listen(SocketAddr::new(IpAddr::V4(ip), cfg.port)),
    )
    .await?;
    let name = match tokio::time::timeout(cfg.timeout, device.self_node()).await {
        Ok(Ok(node)) => node.fqdn(false),
        _ => cfg.hostname.clone(),
    };
    Ok(Tailnet {
        device: Arc::new(device),
        listener,
        name,
        timeout: cfg.timeout,
        restricted: cfg.restricted,
    })
}

/// Looks up the node behind a tailnet address; `None` when control does not say in time.
async fn identify(
    device: &tailscale::Device,
    ip: IpAddr,
    timeout: Duration,
) -> Option<TailnetPeer> {
    match tokio::time::timeout(timeout, device.peer_by_tailnet_ip(ip)).await {
        Ok(Ok(Some(node))) => Some(TailnetPeer {
            hostname: node.hostname,
            tags: node.tags,
        }),
        Ok(Ok(None)) => {
            tracing::warn!(%ip, "tailnet: no node in the netmap has this address");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(%ip, error = %e, "tailnet: peer lookup failed");
            None
        }
        Err(_) => {
            tracing::warn!(%ip, "tailnet: peer lookup timed out");
            None
        }
    }
}

impl Tailnet {
    /// The tailnet address and port the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The node's MagicDNS name (or the requested hostname when control did not say).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Accepts tailnet connections until `stop` resolves and serves `front` on them; the
    /// connections are drained with the other listeners' through `graceful`.
    pub async fn accept(
        &self,
        front: Front,
        graceful: &GracefulShutdown,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let stream = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            // The netstack actor is in trouble; retrying at once would spin.
                            tracing::warn!(error = %e, "tailnet: accept failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    let device = self.device.clone();
                    let front = front.clone();
                    let watcher = graceful.watcher();
                    let (timeout, restricted) = (self.timeout, self.restricted);
                    // The lookup may wait for the control plane: off the accept loop.
                    tokio::spawn(async move {
                        let remote = stream.remote_addr();
                        let node = identify(&device, remote.ip(), timeout).await;
                        if node.is_none() && restricted {
                            // The allow-list cannot be checked for an unknown node: fail closed.
                            tracing::warn!(peer = %remote, "tailnet: connection refused: unknown node and --tailscale-allow is set");
                            return;
                        }
                        let peer = PeerInfo { addr: Some(remote), tailnet: node, tls: false };
                        serve_watched(stream, peer, front, watcher).await;
                    });
                }
                () = &mut stop => break,
            }
        }
    }

    /// Leaves the tailnet (after the connections have been drained).
    pub async fn shutdown(self) {
        drop(self.listener);
        match Arc::try_unwrap(self.device) {
            Ok(device) => {
                if !device.shutdown(Some(DEVICE_SHUTDOWN)).await {
                    tracing::warn!("tailnet: the node did not shut down cleanly");
                }
            }
            // A connection outlived the grace period; its task still holds the device.
            Err(_) => tracing::warn!("tailnet: connections still open at exit"),
        }
    }
}
