//! The JSON API under `/_nebula/v1/`, as types: the gateway serialises its answers from them
//! and the `nebula` CLI reads them back with the same definitions, so the two cannot drift.
//! Serde (and serde_json's free-form value) only, so the CLI pulls in nothing of the gateway.
//!
//! One module per endpoint family: [`files`] (`GET files`), [`jobs`] (`POST transcode`,
//! `GET jobs`, `GET jobs/{id}`, `POST jobs/{id}/cancel`), [`health`] (`GET health`), [`logs`]
//! (`GET logs`), [`keys`] (`keys`, `keys/{id}`, `keys/{id}/allow|deny`); `ping` and the error
//! body are here. `GET metrics` answers Prometheus text, not JSON. With the `cli` feature,
//! [`keys_cli`] holds the command-line verbs of `keys`, which `nebula keys` (through this API)
//! and `nebula-gateway keys` (on the data folder) share.

pub mod files;
pub mod health;
pub mod jobs;
pub mod keys;
#[cfg(feature = "cli")]
pub mod keys_cli;
pub mod logs;

use serde::{Deserialize, Serialize};

/// The body of every API error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An API error: a stable code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code (`NoSuchBucket`, `InvalidQuality`, `ServiceUnavailable`, ...).
    pub code: String,
    /// What happened and what to do about it.
    pub message: String,
}

/// `GET /_nebula/v1/ping` (no signature needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Always [`Ping::SERVICE`]; tells a Nebula gateway from another S3 server.
    pub service: String,
    /// The gateway's version.
    pub version: String,
    /// Seconds since the gateway started.
    pub uptime_secs: u64,
    /// Over the in-process tailnet: the caller's node as the gateway sees it (what
    /// `--tailscale-allow` matches). Absent on other listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tailnet_node: Option<TailnetNode>,
}

impl Ping {
    /// The `service` a Nebula gateway answers with.
    pub const SERVICE: &'static str = "nebula-gateway";
}

/// A tailnet node as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailnetNode {
    /// The node's hostname on the tailnet.
    pub hostname: String,
    /// ACL tags of the node (`tag:NAME`).
    pub tags: Vec<String>,
}
