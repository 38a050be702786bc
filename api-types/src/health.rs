//! `GET /_nebula/v1/health`: the machine and the gateway at a glance.

use serde::{Deserialize, Serialize};

use crate::jobs::JobCounts;

/// The health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` when the catalog database cannot be used or writes are refused
    /// for lack of free space (reads go on either way).
    pub status: HealthStatus,
    /// The gateway's version.
    pub version: String,
    /// Seconds since the gateway started.
    pub uptime_secs: u64,
    /// Processor.
    pub cpu: Cpu,
    /// Memory of the machine and of the gateway.
    pub memory: Memory,
    /// The filesystem of the data folder; `null` when it cannot be read.
    pub disk: Option<Disk>,
    /// Filesystems of buckets mounted from other disks (each listing its buckets); empty when
    /// every bucket is on the data folder's.
    #[serde(default)]
    pub bucket_disks: Vec<Disk>,
    /// Batteries; empty on machines without one.
    pub battery: Vec<Battery>,
    /// The media extension.
    pub media: MediaStatus,
    /// The catalog database.
    pub database: Database,
    /// Transcode jobs by state (the whole queue, all gateways sharing the database); `null`
    /// when the database cannot be read.
    pub jobs: Option<JobCounts>,
    /// Every gateway of the cluster (all sharing this catalog database), as each reports
    /// itself with its heartbeat; empty when the database cannot be read.
    #[serde(default)]
    pub gateways: Vec<GatewayInfo>,
}

/// One gateway of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// `host:pid`.
    pub id: String,
    /// Its version.
    pub version: String,
    /// The URLs it serves on.
    pub addresses: Vec<String>,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339, UTC).
    pub last_heartbeat: String,
    /// Seconds since that heartbeat, by the database's clock.
    pub heartbeat_age_secs: f64,
    /// No heartbeat for longer than three heartbeat periods: killed, hung or cut off from the
    /// database.
    pub stale: bool,
    /// The gateway that answered this request.
    pub this: bool,
}

/// Overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works.
    Ok,
    /// S3 reads work, but the catalog (listings with media, jobs) does not, or writes are
    /// refused because a disk has less free space than the reserve (`--min-free`).
    Degraded,
}

/// Processor load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Cores available to the gateway.
    pub cores: usize,
    /// Load average over 1 minute.
    pub load1: f64,
    /// Load average over 5 minutes.
    pub load5: f64,
    /// Load average over 15 minutes.
    pub load15: f64,
    /// CPU time the gateway process used since it started.
    pub process_cpu_secs: f64,
}

/// Memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// The machine's memory.
    pub total_bytes: u64,
    /// Memory available to new work.
    pub available_bytes: u64,
    /// The gateway's resident set.
    pub gateway_rss_bytes: u64,
}

/// A filesystem the gateway writes to: the data folder's, or a bucket's own disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The data folder, or the first bucket folder on a bucket disk.
    pub path: String,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Free space, including what only root may use.
    pub free_bytes: u64,
    /// Free space the gateway may use.
    pub available_bytes: u64,
    /// The reserve writes leave free (`--min-free`; 0 when off).
    #[serde(default)]
    pub min_free_bytes: u64,
    /// True while writes here are refused (507 InsufficientStorage): less than the reserve is
    /// available. Reads, listings and deletes still work; deleting frees space.
    #[serde(default)]
    pub writes_refused: bool,
    /// The buckets on this filesystem, for a bucket disk (empty for the data folder's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<String>,
}

/// A battery, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Battery {
    /// Its name (`BAT0`).
    pub name: String,
    /// Charge in percent.
    pub capacity_percent: Option<u8>,
    /// `Charging`, `Discharging`, `Full`, ...
    pub status: Option<String>,
}

/// The media extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaStatus {
    /// False when GStreamer is missing (transcodes answer 501).
    pub enabled: bool,
    /// The H.264 encoder element in use.
    pub encoder: Option<String>,
    /// Live transcodes allowed at once.
    pub max_transcodes: Option<usize>,
}

/// The catalog database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    /// `sqlite` or `postgres`; `null` without a catalog.
    pub engine: Option<String>,
    /// True when it answered.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}
