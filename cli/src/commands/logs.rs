//! `nebula logs`: the gateway's recent log lines (`GET /_nebula/v1/logs`), and new ones as they
//! come with `-f`.

use std::time::Duration;

use nebula_api_types::logs::{LogLine, LogPage};

use super::Ctx;
use crate::client::Client;
use crate::error::Result;

/// How often `-f` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Lines asked for per request while following (more are fetched at once when there are).
const FOLLOW_BATCH: usize = 1000;

/// Arguments of `nebula logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show the last N lines.
    #[arg(short = 'n', long = "lines", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    lines: u32,
    /// Keep printing new lines as the gateway logs them (Ctrl-C stops).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only lines at this level or more severe.
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    level: String,
    /// Print each line as a JSON object (one per line).
    #[arg(long)]
    json: bool,
}

/// Runs `nebula logs`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (_, client) = ctx.client().await?;
    let limit = args.lines.to_string();
    let page: LogPage = client
        .api_get("logs", &[("level", &args.level), ("limit", &limit)])
        .await?;
    print_lines(&page.lines, args.json);
    if !args.follow {
        return Ok(());
    }
    follow(&client, page.next, &args).await
}

/// Polls for the lines after `since` until interrupted.
async fn follow(client: &Client, mut since: u64, args: &Args) -> Result<()> {
    loop {
        let (cursor, batch) = (since.to_string(), FOLLOW_BATCH.to_string());
        let page: LogPage = client
            .api_get(
                "logs",
                &[
                    ("since", &cursor),
                    ("level", &args.level),
                    ("limit", &batch),
                ],
            )
            .await?;
        if page.missed > 0 {
            eprintln!(
                "... {} lines were dropped from the gateway's log before they could be shown",
                page.missed
            );
        }
        print_lines(&page.lines, args.json);
        let full = page.lines.len() == FOLLOW_BATCH;
        since = page.next;
        if !full {
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
}

fn print_lines(lines: &[LogLine], json: bool) {
    for l in lines {
        if json {
            println!("{}", serde_json::to_string(l).expect("log lines serialise"));
        } else {
            println!("{}", format_line(l));
        }
    }
}

/// `TIME LEVEL target: message key=value ...`, as the gateway writes it to stderr.
fn format_line(l: &LogLine) -> String {
    let mut out = format!("{} {:>5} {}: {}", l.time, l.level, l.target, l.message);
    for (k, v) in &l.fields {
        let v = match v {
            serde_json::Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => {
                s.clone()
            }
            other => other.to_string(),
        };
        out.push_str(&format!(" {k}={v}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_the_gateway_log() {
        let l: LogLine = serde_json::from_value(serde_json::json!({
            "seq": 7, "time": "2026-12-06T17:00:00.123Z", "level": "WARN",
            "target": "nebula::request", "message": "request",
            "fields": {"method": "GET", "status": 404, "path": "/b/my key"}
        }))
        .unwrap();
        assert_eq!(
            format_line(&l),
            "2026-12-06T17:00:00.123Z  WARN nebula::request: request method=GET path=\"/b/my key\" status=404"
        );
    }
}
