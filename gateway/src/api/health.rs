//! `GET /_nebula/v1/health`: the machine and the gateway at a glance.

use crate::store::Store;

use nebula_api_types::health::{
    Battery, Cpu, Database, Disk, GatewayInfo, Health, HealthStatus, MediaStatus, Memory,
};

use super::{ApiResult, ApiState, ok};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn cpu() -> Cpu {
    let load = read("/proc/loadavg");
    let mut it = load
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    let (load1, load5, load15) = (
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    );
    // utime and stime are fields 14 and 15 of /proc/self/stat, after the parenthesised name.
    let stat = read("/proc/self/stat");
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second().max(1) as f64;
    Cpu {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load1,
        load5,
        load15,
        process_cpu_secs: ticks as f64 / hz,
    }
}

fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn memory() -> Memory {
    let mi = read("/proc/meminfo");
    let st = read("/proc/self/status");
    Memory {
        total_bytes: kib_field(&mi, "MemTotal:"),
        available_bytes: kib_field(&mi, "MemAvailable:"),
        gateway_rss_bytes: kib_field(&st, "VmRSS:"),
    }
}

/// The data folder's filesystem (`None` when it cannot be read) and the other disks buckets
/// are on, with their reserve and whether writes are refused there. Blocking.
pub(super) fn disks(store: &Store) -> (Option<Disk>, Vec<Disk>) {
    let mut all = store.space_report().into_iter().map(|r| Disk {
        path: r.path.display().to_string(),
        total_bytes: r.space.total,
        free_bytes: r.space.free,
        available_bytes: r.space.available,
        min_free_bytes: r.min_free,
        writes_refused: r.writes_refused,
        buckets: r.buckets,
    });
    // The report starts with the data folder's filesystem when it could be read.
    match all.next() {
        Some(d) if d.buckets.is_empty() => (Some(d), all.collect()),
        Some(d) => (None, std::iter::once(d).chain(all).collect()),
        None => (None, Vec::new()),
    }
}

/// Batteries as the kernel lists them; an empty list on machines without one.
fn batteries() -> Vec<Battery> {
    let Ok(rd) = std::fs::read_dir("/sys/class/power_supply") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| read(&format!("{}/type", e.path().display())).trim() == "Battery")
        .map(|e| {
            let p = e.path();
            let capacity = read(&format!("{}/capacity", p.display()))
                .trim()
                .parse()
                .ok();
            let status = Some(read(&format!("{}/status", p.display())).trim().to_owned())
                .filter(|s| !s.is_empty());
            Battery {
                name: e.file_name().to_string_lossy().into_owned(),
                capacity_percent: capacity,
                status,
            }
        })
        .collect()
}

/// Builds the health report.
pub async fn health(state: &ApiState) -> ApiResult {
    let database = match &state.catalog {
        Some(c) => {
            let h = c.health().await;
            Database {
                engine: Some(h.engine.to_owned()),
                ok: h.ok,
                error: h.error,
            }
        }
        None => Database {
            engine: None,
            ok: false,
            error: Some("no catalog is configured".into()),
        },
    };
    let media = match &state.media {
        Some(m) => MediaStatus {
            enabled: true,
            encoder: Some(m.encoder().element_name().to_owned()),
            max_transcodes: Some(m.max_transcodes()),
        },
        None => MediaStatus {
            enabled: false,
            encoder: None,
            max_transcodes: None,
        },
    };
    let jobs = match &state.jobs {
        Some(j) if database.ok => j.counts().await.ok(),
        _ => None,
    };
    let gateways = match &state.catalog {
        Some(c) if database.ok => gateways(c).await,
        _ => Vec::new(),
    };
    let store = state.store.clone();
    let ((disk, bucket_disks), battery) =
        tokio::task::spawn_blocking(move || (disks(&store), batteries()))
            .await
            .unwrap_or(((None, Vec::new()), Vec::new()));
    // Writes refused for lack of space degrade the gateway but do not take it down: reads,
    // listings and deletes (which free space) must keep being routed to it.
    let full = disk.iter().chain(&bucket_disks).any(|d| d.writes_refused);
    let report = Health {
        status: if database.ok && !full {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        },
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: state.started.elapsed().as_secs(),
        cpu: cpu(),
        memory: memory(),
        disk,
        bucket_disks,
        battery,
        media,
        database,
        jobs,
        gateways,
    };
    ok(&report)
}

/// The gateways sharing the catalog database, as their rows say.
async fn gateways(catalog: &crate::catalog::Catalog) -> Vec<GatewayInfo> {
    let Ok((now_ms, rows)) = catalog.gateways().await else {
        return Vec::new();
    };
    let stale_ms = catalog.stale_after().as_millis() as i64;
    let me = crate::catalog::gateway_id();
    rows.into_iter()
        .map(|r| GatewayInfo {
            addresses: r.address_list(),
            started_at: rfc3339_ms(r.started_ms),
            last_heartbeat: rfc3339_ms(r.heartbeat_ms),
            heartbeat_age_secs: (now_ms - r.heartbeat_ms).max(0) as f64 / 1000.0,
            stale: now_ms - r.heartbeat_ms > stale_ms,
            this: r.id == me,
            id: r.id,
            version: r.version,
        })
        .collect()
}

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
