//! `nebula status`: the gateway's `/_nebula/v1/health` as a dashboard.

use std::time::Duration;

use indicatif::HumanBytes;
use nebula_api_types::health::{Disk, Health, HealthStatus};

use super::{Ctx, print_json};
use crate::error::Result;
use crate::progress::human_duration;

/// Arguments of `nebula status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the health document as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `nebula status`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (_, client) = ctx.client().await?;
    let h: Health = client.api_get("health", &[]).await?;
    if args.json {
        print_json(&h);
    } else {
        print!("{}", dashboard(&client.base, &h));
    }
    Ok(())
}

fn bytes(b: u64) -> String {
    HumanBytes(b).to_string()
}

/// A filesystem's line: free space, the reserve, and whether writes are refused there.
fn disk_line(d: &Disk) -> String {
    let used = if d.total_bytes > 0 {
        format!(
            " ({:.0}% used)",
            100.0 - d.available_bytes as f64 * 100.0 / d.total_bytes as f64
        )
    } else {
        String::new()
    };
    let reserve = if d.min_free_bytes > 0 {
        format!(", keeps {} free", bytes(d.min_free_bytes))
    } else {
        String::new()
    };
    let refused = if d.writes_refused {
        ": FULL, writes refused (507) until space is freed; reads and deletes work"
    } else {
        ""
    };
    format!(
        "{}: {} available of {}{used}{reserve}{refused}",
        d.path,
        bytes(d.available_bytes),
        bytes(d.total_bytes)
    )
}

/// The dashboard text.
fn dashboard(base: &str, h: &Health) -> String {
    let mut out = String::new();
    let mut row = |label: &str, text: String| out.push_str(&format!("{label:<9}{text}\n"));
    let state = match h.status {
        HealthStatus::Ok => "OK",
        HealthStatus::Degraded => "DEGRADED",
    };
    row(
        "Gateway",
        format!(
            "nebula-gateway {} at {base}: {state}, up {}",
            h.version,
            human_duration(Duration::from_secs(h.uptime_secs))
        ),
    );
    let c = &h.cpu;
    row(
        "CPU",
        format!(
            "{} cores, load {:.2} {:.2} {:.2}, gateway CPU time {:.1}s",
            c.cores, c.load1, c.load5, c.load15, c.process_cpu_secs
        ),
    );
    let m = &h.memory;
    row(
        "Memory",
        format!(
            "{} available of {}, gateway uses {}",
            bytes(m.available_bytes),
            bytes(m.total_bytes),
            bytes(m.gateway_rss_bytes)
        ),
    );
    match &h.disk {
        Some(d) => row("Disk", disk_line(d)),
        None => row("Disk", "unknown".into()),
    }
    for d in &h.bucket_disks {
        row(
            "Disk",
            format!("(buckets {}) {}", d.buckets.join(", "), disk_line(d)),
        );
    }
    if !h.battery.is_empty() {
        let text: Vec<String> = h
            .battery
            .iter()
            .map(|b| {
                format!(
                    "{} {}% {}",
                    b.name,
                    b.capacity_percent.map_or("?".into(), |p| p.to_string()),
                    b.status.as_deref().unwrap_or("")
                )
            })
            .collect();
        row("Battery", text.join(", "));
    }
    let me = &h.media;
    let media = if me.enabled {
        format!(
            "transcoding on, encoder {}, up to {} at once",
            me.encoder.as_deref().unwrap_or("?"),
            me.max_transcodes.map_or("?".into(), |n| n.to_string())
        )
    } else {
        "transcoding off".into()
    };
    row("Media", media);
    let db = &h.database;
    let state = if db.ok {
        "ok".to_owned()
    } else {
        format!(
            "FAILING: {}",
            db.error.as_deref().unwrap_or("unknown error")
        )
    };
    row(
        "Catalog",
        format!("{} {state}", db.engine.as_deref().unwrap_or("none")),
    );
    if let Some(j) = &h.jobs {
        row(
            "Jobs",
            format!(
                "{} pending, {} processing, {} completed, {} failed, {} cancelled",
                j.pending, j.processing, j.completed, j.failed, j.cancelled
            ),
        );
    }
    if !h.gateways.is_empty() {
        out.push_str(&format!("Cluster  {} gateway(s)\n", h.gateways.len()));
        for g in &h.gateways {
            let mut marks = Vec::new();
            if g.this {
                marks.push("this one".to_owned());
            }
            if g.stale {
                marks.push(format!(
                    "STALE: no heartbeat for {}",
                    human_duration(Duration::from_secs_f64(g.heartbeat_age_secs))
                ));
            }
            let marks = if marks.is_empty() {
                String::new()
            } else {
                format!(" ({})", marks.join(", "))
            };
            out.push_str(&format!(
                "  {} {} v{}, started {}, heartbeat {:.0}s ago{marks}\n",
                g.id,
                g.addresses.join(" "),
                g.version,
                g.started_at,
                g.heartbeat_age_secs
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A health document: `fields` plus the CPU and memory every test shares.
    fn health(mut fields: serde_json::Value) -> Health {
        fields["cpu"] = serde_json::json!({"cores": 2, "load1": 0.5, "load5": 0.25, "load15": 0.0, "process_cpu_secs": 1.25});
        fields["memory"] = serde_json::json!({"total_bytes": 2048, "available_bytes": 1024, "gateway_rss_bytes": 512});
        serde_json::from_value(fields).unwrap()
    }

    #[test]
    fn renders_the_health_document() {
        let h = health(serde_json::json!({
            "status": "degraded", "version": "0.1.0", "uptime_secs": 65,
            "disk": null, "battery": [],
            "media": {"enabled": false, "encoder": null, "max_transcodes": null},
            "database": {"engine": null, "ok": false, "error": "no catalog is configured"},
            "jobs": null
        }));
        let text = dashboard("http://x", &h);
        assert!(text.contains("DEGRADED, up 1m 5s"), "{text}");
        assert!(text.contains("2 cores, load 0.50 0.25 0.00"), "{text}");
        assert!(text.contains("Disk     unknown"), "{text}");
        assert!(
            text.contains("Catalog  none FAILING: no catalog is configured"),
            "{text}"
        );
        assert!(!text.contains("Jobs"), "{text}");
        assert!(!text.contains("Cluster"), "{text}");
    }

    #[test]
    fn shows_the_reserve_and_refused_writes() {
        let h = health(serde_json::json!({
            "status": "degraded", "version": "0.1.0", "uptime_secs": 5,
            "disk": {"path": "/srv/data", "total_bytes": 4194304, "free_bytes": 1048576,
                     "available_bytes": 1048576, "min_free_bytes": 2097152, "writes_refused": true},
            "bucket_disks": [{"path": "/srv/data/media", "total_bytes": 4194304,
                              "free_bytes": 3145728, "available_bytes": 3145728,
                              "min_free_bytes": 2097152, "writes_refused": false,
                              "buckets": ["media", "photos"]}],
            "battery": [],
            "media": {"enabled": false, "encoder": null, "max_transcodes": null},
            "database": {"engine": "sqlite", "ok": true, "error": null},
            "jobs": null
        }));
        let text = dashboard("http://x", &h);
        assert!(text.contains("DEGRADED"), "{text}");
        assert!(
            text.contains("Disk     /srv/data: 1.00 MiB available of 4.00 MiB (75% used), keeps 2.00 MiB free: FULL, writes refused (507)"),
            "{text}"
        );
        assert!(
            text.contains("Disk     (buckets media, photos) /srv/data/media: 3.00 MiB available of 4.00 MiB (25% used), keeps 2.00 MiB free\n"),
            "{text}"
        );
    }

    #[test]
    fn lists_the_gateways_of_a_cluster() {
        let h = health(serde_json::json!({
            "status": "ok", "version": "0.1.0", "uptime_secs": 5,
            "disk": null, "battery": [],
            "media": {"enabled": false, "encoder": null, "max_transcodes": null},
            "database": {"engine": "postgres", "ok": true, "error": null},
            "jobs": null,
            "gateways": [
                {"id": "a:1", "version": "0.1.0", "addresses": ["http://a:9000"],
                 "started_at": "2026-01-01T00:00:00Z", "last_heartbeat": "2026-01-01T00:01:00Z",
                 "heartbeat_age_secs": 2.0, "stale": false, "this": true},
                {"id": "b:2", "version": "0.1.0", "addresses": ["http://b:9000"],
                 "started_at": "2026-01-01T00:00:00Z", "last_heartbeat": "2026-01-01T00:00:10Z",
                 "heartbeat_age_secs": 52.0, "stale": true, "this": false}
            ]
        }));
        let text = dashboard("http://x", &h);
        assert!(text.contains("Cluster  2 gateway(s)"), "{text}");
        assert!(text.contains("  a:1 http://a:9000 v0.1.0"), "{text}");
        assert!(text.contains("(this one)"), "{text}");
        assert!(
            text.contains("b:2 http://b:9000") && text.contains("STALE: no heartbeat for 52.0s"),
            "{text}"
        );
    }
}
