//! `nebula ping`: is the gateway there, how fast does it answer, which version is it.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Ctx, print_json};
use crate::error::Result;

/// Arguments of `nebula ping`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `nebula ping`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (_, client) = ctx.client().await?;
    let url = client.api_url("ping", &[]);
    let started = Instant::now();
    let resp = client.get_unsigned(&url, Duration::from_secs(10)).await?;
    let status = resp.status();
    let body: Option<serde_json::Value> = resp.json().await.ok();
    let latency = started.elapsed();
    if status.is_success()
        && let Some(v) = body.filter(|v| v["service"] == "nebula-gateway")
    {
        let version = v["version"].as_str().unwrap_or("?").to_owned();
        let uptime = v["uptime_secs"].as_u64();
        if args.json {
            print_json(
                &json!({"url": client.base, "nebula": true, "version": version, "uptime_secs": uptime, "latency_ms": ms(latency)}),
            );
        } else {
            let up = uptime
                .map(|s| {
                    format!(
                        ", up {}",
                        crate::progress::human_duration(Duration::from_secs(s))
                    )
                })
                .unwrap_or_default();
            println!(
                "nebula-gateway {version} at {} answered in {:.1} ms{up}",
                client.base,
                ms(latency)
            );
        }
        return Ok(());
    }
    // Not a Nebula gateway (or an old one): an S3 round trip still proves reachability and keys.
    let started = Instant::now();
    let buckets = client.list_buckets().await?;
    let latency = started.elapsed();
    if args.json {
        print_json(
            &json!({"url": client.base, "nebula": false, "latency_ms": ms(latency), "buckets": buckets.len()}),
        );
    } else {
        println!(
            "{} answered S3 ListBuckets in {:.1} ms ({} buckets), but it is not a Nebula gateway",
            client.base,
            ms(latency),
            buckets.len()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
