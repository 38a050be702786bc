//! `nebula status`: the gateway's `/_nebula/v1/health` as a dashboard.

use std::time::Duration;

use indicatif::HumanBytes;
use serde_json::Value;

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
    let h: Value = client.api_get("health", &[]).await?;
    if args.json {
        print_json(&h);
    } else {
        print!("{}", dashboard(&client.base, &h));
    }
    Ok(())
}

fn bytes(v: &Value) -> String {
    v.as_u64()
        .map(|b| HumanBytes(b).to_string())
        .unwrap_or_else(|| "?".into())
}

fn num(v: &Value) -> String {
    v.as_f64()
        .map(|f| format!("{f:.2}"))
        .unwrap_or_else(|| "?".into())
}

/// The dashboard text; every section tolerates missing fields (older or newer gateways).
fn dashboard(base: &str, h: &Value) -> String {
    let mut out = String::new();
    let mut row = |label: &str, text: String| out.push_str(&format!("{label:<9}{text}\n"));
    let up = h["uptime_secs"]
        .as_u64()
        .map(|s| format!(", up {}", human_duration(Duration::from_secs(s))))
        .unwrap_or_default();
    row(
        "Gateway",
        format!(
            "nebula-gateway {} at {base}: {}{up}",
            h["version"].as_str().unwrap_or("?"),
            h["status"].as_str().unwrap_or("?").to_uppercase()
        ),
    );
    let c = &h["cpu"];
    if c.is_object() {
        let cpu_time = c["process_cpu_secs"]
            .as_f64()
            .map(|s| format!(", gateway CPU time {s:.1}s"))
            .unwrap_or_default();
        row(
            "CPU",
            format!(
                "{} cores, load {} {} {}{cpu_time}",
                c["cores"].as_u64().map_or("?".into(), |n| n.to_string()),
                num(&c["load1"]),
                num(&c["load5"]),
                num(&c["load15"])
            ),
        );
    }
    let m = &h["memory"];
    if m.is_object() {
        row(
            "Memory",
            format!(
                "{} available of {}, gateway uses {}",
                bytes(&m["available_bytes"]),
                bytes(&m["total_bytes"]),
                bytes(&m["gateway_rss_bytes"])
            ),
        );
    }
    let d = &h["disk"];
    if d.is_object() {
        let used = match (d["total_bytes"].as_u64(), d["available_bytes"].as_u64()) {
            (Some(t), Some(a)) if t > 0 => {
                format!(" ({:.0}% used)", 100.0 - a as f64 * 100.0 / t as f64)
            }
            _ => String::new(),
        };
        row(
            "Disk",
            format!(
                "{}: {} available of {}{used}",
                d["path"].as_str().unwrap_or("?"),
                bytes(&d["available_bytes"]),
                bytes(&d["total_bytes"])
            ),
        );
    } else {
        row("Disk", "unknown".into());
    }
    if let Some(bats) = h["battery"].as_array().filter(|b| !b.is_empty()) {
        let text: Vec<String> = bats
            .iter()
            .map(|b| {
                format!(
                    "{} {}% {}",
                    b["name"].as_str().unwrap_or("battery"),
                    b["capacity_percent"]
                        .as_u64()
                        .map_or("?".into(), |p| p.to_string()),
                    b["status"].as_str().unwrap_or("")
                )
            })
            .collect();
        row("Battery", text.join(", "));
    }
    let me = &h["media"];
    if me.is_object() {
        let text = if me["enabled"].as_bool() == Some(true) {
            format!(
                "transcoding on, encoder {}, up to {} at once",
                me["encoder"].as_str().unwrap_or("?"),
                me["max_transcodes"]
                    .as_u64()
                    .map_or("?".into(), |n| n.to_string())
            )
        } else {
            "transcoding off".into()
        };
        row("Media", text);
    }
    let db = &h["database"];
    if db.is_object() {
        let state = if db["ok"].as_bool() == Some(true) {
            "ok".to_owned()
        } else {
            format!(
                "FAILING: {}",
                db["error"].as_str().unwrap_or("unknown error")
            )
        };
        row(
            "Catalog",
            format!("{} {state}", db["engine"].as_str().unwrap_or("?")),
        );
    }
    let j = &h["jobs"];
    if j.is_object() {
        let n = |k: &str| j[k].as_u64().unwrap_or(0);
        row(
            "Jobs",
            format!(
                "{} pending, {} processing, {} completed, {} failed, {} cancelled",
                n("pending"),
                n("processing"),
                n("completed"),
                n("failed"),
                n("cancelled")
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_partial_documents() {
        let h = serde_json::json!({"status": "ok", "version": "0.1.0", "uptime_secs": 65, "disk": null, "cpu": {"cores": 2, "load1": 0.5}});
        let text = dashboard("http://x", &h);
        assert!(text.contains("OK, up 1m 5s"), "{text}");
        assert!(text.contains("2 cores, load 0.50 ? ?"), "{text}");
        assert!(text.contains("Disk     unknown"), "{text}");
    }
}
