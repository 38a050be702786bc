//! `nebula ping`: is the gateway there, how fast does it answer, which version is it.

use std::time::{Duration, Instant};

use nebula_api_types::Ping;
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
    let pong: Option<Ping> = resp.json().await.ok();
    let latency = started.elapsed();
    if status.is_success()
        && let Some(pong) = pong.filter(|p| p.service == Ping::SERVICE)
    {
        let Ping {
            version,
            uptime_secs: uptime,
            tailnet_node,
            ..
        } = pong;
        if args.json {
            print_json(
                &json!({"url": client.base, "nebula": true, "version": version, "uptime_secs": uptime, "latency_ms": ms(latency), "tailnet_node": tailnet_node}),
            );
        } else {
            let up = format!(
                ", up {}",
                crate::progress::human_duration(Duration::from_secs(uptime))
            );
            // Over the tailnet: who the gateway takes us for (what --tailscale-allow matches).
            let node = tailnet_node
                .map(|n| format!("; it sees this machine as tailnet node {}", n.hostname))
                .unwrap_or_default();
            println!(
                "nebula-gateway {version} at {} answered in {:.1} ms{up}{node}",
                client.base,
                ms(latency)
            );
        }
        return Ok(());
    }
    // Not a Nebula gateway: an S3 round trip still proves reachability and keys.
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
