//! `nebula transcode`, `transcode-status`, `transcode-jobs`, `transcode-cancel`: the gateway's
//! background transcode jobs (`/_nebula/v1/transcode`, `/_nebula/v1/jobs`).

use std::collections::HashMap;
use std::time::Duration;

use clap::builder::TypedValueParser;
use indicatif::{MultiProgress, ProgressBar};
use nebula_api_types::jobs::{Job, JobList, JobStatus, QualityName, TranscodeRequest};

use super::{BucketArg, Ctx, print_json};
use crate::client::Client;
use crate::error::{CliError, Result, shell_word};
use crate::progress::percent_bar;

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

/// Progress in percent (the gateway sends 0–100; a completed job is 100).
fn percent(job: &Job) -> u64 {
    if job.status == JobStatus::Completed {
        100
    } else {
        u64::from(job.progress.min(100))
    }
}

fn line(job: &Job) -> String {
    let mut s = format!(
        "{}  {:<10}  {:>4}p  {:>3}%  {}",
        job.id,
        job.status,
        job.quality,
        percent(job),
        job.key
    );
    if let Some(e) = job.error.as_deref().filter(|e| !e.is_empty()) {
        s.push_str(&format!("  ({e})"));
    }
    s
}

/// Runs `nebula transcode`.
pub async fn run_transcode(ctx: &Ctx, args: TranscodeArgs) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    let body = TranscodeRequest {
        bucket: bucket.clone(),
        key: args.key.clone(),
        qualities: args
            .qualities
            .iter()
            .map(|q| QualityName::Height(u64::from(*q)))
            .collect(),
    };
    let JobList { jobs } = client.api_post("transcode", &body).await?;
    if args.json {
        print_json(&jobs);
    } else {
        for j in &jobs {
            println!("{}", line(j));
        }
        eprintln!(
            "follow them with `nebula transcode-status -b {} {} --watch`",
            shell_word(&bucket),
            shell_word(&args.key)
        );
    }
    Ok(())
}

async fn jobs_for(client: &Client, bucket: &str, key: &str) -> Result<Vec<Job>> {
    let JobList { jobs } = client
        .api_get("jobs", &[("bucket", bucket), ("key", key)])
        .await?;
    Ok(jobs)
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
    if args.watch && jobs.iter().any(|j| j.status == JobStatus::Failed) {
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
    mut jobs: Vec<Job>,
    show: bool,
) -> Result<Vec<Job>> {
    let multi = MultiProgress::new();
    if !show {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut bars: HashMap<i64, ProgressBar> = HashMap::new();
    loop {
        for j in &jobs {
            let bar = bars
                .entry(j.id)
                .or_insert_with(|| multi.add(percent_bar(String::new())));
            bar.set_message(format!("{} {}p {}", j.id, j.quality, j.status));
            bar.set_position(percent(j));
        }
        if jobs.iter().all(|j| j.status.is_final()) {
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
    let JobList { jobs } = client.api_get("jobs", &q).await?;
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
    let job: Job = client.api_post(&path, &serde_json::json!({})).await?;
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

    fn job(status: JobStatus, progress: u8) -> Job {
        Job {
            id: 7,
            bucket: "b".into(),
            key: "v.mp4".into(),
            quality: 480,
            status,
            progress,
            output_size: None,
            error: None,
            encoder: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: None,
            completed_at: None,
            worker_id: None,
            attempts: 1,
        }
    }

    #[test]
    fn progress_and_lines() {
        assert_eq!(percent(&job(JobStatus::Processing, 42)), 42);
        assert_eq!(percent(&job(JobStatus::Completed, 0)), 100);
        let mut failed = job(JobStatus::Failed, 10);
        failed.error = Some("no decoder".into());
        assert_eq!(
            line(&failed),
            "7  failed       480p   10%  v.mp4  (no decoder)"
        );
    }
}
