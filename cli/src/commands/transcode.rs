//! `nebula transcode`, `transcode-status`, `transcode-jobs`, `transcode-cancel`: the gateway's
//! background transcode jobs (`/_nebula/v1/transcode`, `/_nebula/v1/jobs`).

use std::collections::HashMap;
use std::time::Duration;

use clap::builder::TypedValueParser;
use indicatif::{MultiProgress, ProgressBar};
use serde_json::{Value, json};

use super::{BucketArg, Ctx, print_json};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::progress::percent_bar;

/// Job states after which nothing changes any more.
const FINAL: [&str; 3] = ["completed", "failed", "cancelled"];

/// Arguments of `nebula transcode`.
#[derive(Debug, clap::Args)]
pub struct TranscodeArgs {
    /// Object key.
    key: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// Qualities (heights), comma-separated.
    #[arg(long, short = 'q', value_delimiter = ',', default_value = "480,720",
          value_parser = clap::builder::PossibleValuesParser::new(super::play::QUALITIES).map(|s| s.parse::<u32>().expect("listed values are numbers")))]
    qualities: Vec<u32>,
    /// Print the created jobs as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `nebula transcode-status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Object key.
    key: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// Follow the jobs with progress bars until they all finish.
    #[arg(long, short = 'w')]
    watch: bool,
    /// Print JSON (with --watch: the final state).
    #[arg(long)]
    json: bool,
}

/// Arguments of `nebula transcode-jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Only jobs in this state.
    #[arg(long, value_parser = ["pending", "processing", "completed", "failed", "cancelled"])]
    status: Option<String>,
    /// At most N jobs.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `nebula transcode-cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// Job id.
    job: String,
    /// Print the job as JSON.
    #[arg(long)]
    json: bool,
}

/// The jobs in an answer that is either `{"jobs": [...]}`/`{"items": [...]}` or a bare array.
fn jobs_of(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("jobs").or_else(|| o.remove("items")) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Progress in percent; the API may send a fraction (0–1) or a percentage.
fn percent(job: &Value) -> u64 {
    if job["status"] == "completed" {
        return 100;
    }
    match job["progress"].as_f64() {
        Some(p) if p <= 1.0 => (p * 100.0).round() as u64,
        Some(p) => p.round().min(100.0) as u64,
        None => 0,
    }
}

fn line(job: &Value) -> String {
    let mut s = format!(
        "{}  {:<10}  {:>4}p  {:>3}%  {}",
        text(&job["id"]),
        text(&job["status"]),
        text(&job["quality"]),
        percent(job),
        text(&job["key"])
    );
    if let Some(e) = job["error"].as_str().filter(|e| !e.is_empty()) {
        s.push_str(&format!("  ({e})"));
    }
    s
}

/// Runs `nebula transcode`.
pub async fn run_transcode(ctx: &Ctx, args: TranscodeArgs) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    let body = json!({"bucket": bucket, "key": args.key, "qualities": args.qualities});
    let jobs = jobs_of(client.api_post("transcode", &body).await?);
    if args.json {
        print_json(&jobs);
    } else {
        for j in &jobs {
            println!("{}", line(j));
        }
        eprintln!(
            "follow them with `nebula transcode-status {} --watch`",
            args.key
        );
    }
    Ok(())
}

async fn jobs_for(client: &Client, bucket: &str, key: &str) -> Result<Vec<Value>> {
    Ok(jobs_of(
        client
            .api_get("jobs", &[("bucket", bucket), ("key", key)])
            .await?,
    ))
}

/// Runs `nebula transcode-status`.
pub async fn run_status(ctx: &Ctx, args: StatusArgs) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    let mut jobs = jobs_for(&client, &bucket, &args.key).await?;
    if args.watch {
        jobs = watch(&client, &bucket, &args.key, jobs, !args.json).await?;
    }
    if args.json {
        print_json(&jobs);
    } else if jobs.is_empty() {
        eprintln!("no transcode jobs for s3://{bucket}/{}", args.key);
    } else {
        for j in &jobs {
            println!("{}", line(j));
        }
    }
    if args.watch && jobs.iter().any(|j| j["status"] == "failed") {
        return Err(CliError::Remote {
            status: 200,
            code: "TranscodeFailed".into(),
            message: String::new(),
            resource: format!("s3://{bucket}/{}", args.key),
        });
    }
    Ok(())
}

/// Polls until every job is final, with one bar per job.
async fn watch(
    client: &Client,
    bucket: &str,
    key: &str,
    mut jobs: Vec<Value>,
    show: bool,
) -> Result<Vec<Value>> {
    let multi = MultiProgress::new();
    if !show {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        for j in &jobs {
            let id = text(&j["id"]);
            let bar = bars
                .entry(id.clone())
                .or_insert_with(|| multi.add(percent_bar(String::new())));
            bar.set_message(format!(
                "{id} {}p {}",
                text(&j["quality"]),
                text(&j["status"])
            ));
            bar.set_position(percent(j));
        }
        if jobs
            .iter()
            .all(|j| FINAL.contains(&j["status"].as_str().unwrap_or_default()))
        {
            bars.values().for_each(|b| b.finish());
            multi.clear().ok();
            return Ok(jobs);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        jobs = jobs_for(client, bucket, key).await?;
    }
}

/// Runs `nebula transcode-jobs`.
pub async fn run_jobs(ctx: &Ctx, args: JobsArgs) -> Result<()> {
    let (_, client) = ctx.client().await?;
    let limit = args.limit.to_string();
    let mut q = vec![("limit", limit.as_str())];
    if let Some(s) = &args.status {
        q.push(("status", s));
    }
    let jobs = jobs_of(client.api_get("jobs", &q).await?);
    if args.json {
        print_json(&jobs);
    } else if jobs.is_empty() {
        eprintln!("no transcode jobs");
    } else {
        for j in &jobs {
            println!("{}", line(j));
        }
    }
    Ok(())
}

/// Runs `nebula transcode-cancel`.
pub async fn run_cancel(ctx: &Ctx, args: CancelArgs) -> Result<()> {
    let (_, client) = ctx.client().await?;
    let path = format!("jobs/{}/cancel", crate::sign::encode_query(&args.job));
    let job: Value = client.api_post(&path, &json!({})).await?;
    let job = job.get("job").cloned().unwrap_or(job);
    if args.json {
        print_json(&job);
    } else {
        println!("{}", line(&job));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(jobs_of(json!({"jobs": [{"id": 1}]})).len(), 1);
        assert_eq!(jobs_of(json!([{"id": 1}, {"id": 2}])).len(), 2);
        assert_eq!(
            percent(&json!({"status": "processing", "progress": 0.5})),
            50
        );
        assert_eq!(
            percent(&json!({"status": "processing", "progress": 42.0})),
            42
        );
        assert_eq!(
            percent(&json!({"status": "completed", "progress": null})),
            100
        );
    }
}
