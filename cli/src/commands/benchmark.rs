//! `nebula benchmark`: upload, download, ranged reads and live transcode speed against the
//! gateway, printed as a table and saved as JSON.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use reqwest::Method;
use serde::Serialize;

use super::{BucketArg, Ctx};
use crate::client::Body;
use crate::error::{CliError, Result};
use crate::s3::s3_uri;

const MIB: u64 = 1024 * 1024;
/// Number of random 1 MiB ranged reads.
const RANGES: usize = 5;

/// Arguments of `nebula benchmark`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A local file to use (a video, to measure transcoding).
    file: PathBuf,
    #[command(flatten)]
    bucket: BucketArg,
    /// Skip the transcode measurement.
    #[arg(long)]
    skip_transcode: bool,
    /// Where to save the results.
    #[arg(long, short = 'o', default_value = "results.json")]
    output: PathBuf,
}

/// One measured step.
#[derive(Debug, Serialize)]
struct Step {
    name: String,
    bytes: u64,
    seconds: f64,
    mib_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_byte_ms: Option<f64>,
}

impl Step {
    fn new(name: &str, bytes: u64, took: Duration, first_byte: Option<Duration>) -> Self {
        let secs = took.as_secs_f64().max(1e-9);
        Step {
            name: name.into(),
            bytes,
            seconds: round3(secs),
            mib_per_sec: round3(bytes as f64 / MIB as f64 / secs),
            first_byte_ms: first_byte.map(|d| round3(d.as_secs_f64() * 1000.0)),
        }
    }
}

fn round3(f: f64) -> f64 {
    (f * 1000.0).round() / 1000.0
}

/// Runs `nebula benchmark`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    let name = args
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let key = format!(
        "nebula-benchmark/{:08x}-{name}",
        rand::rng().random::<u32>()
    );
    let mut steps = Vec::new();

    eprintln!(
        "uploading {} as {}",
        args.file.display(),
        s3_uri(&bucket, &key)
    );
    let spec = super::upload::UploadSpec {
        path: args.file.clone(),
        bucket: bucket.clone(),
        key: key.clone(),
        description: None,
        parallel: 4,
        limit: None,
    };
    let t = Instant::now();
    let up = super::upload::upload(&client, &spec, true).await?;
    steps.push(Step::new("upload", up.size, t.elapsed(), None));

    // Everything after the upload must clean up the benchmark object, even on failure.
    let result = measure(
        &client,
        &bucket,
        &key,
        up.size,
        args.skip_transcode,
        &mut steps,
    )
    .await;
    if let Err(e) = client.delete_object(&bucket, &key).await {
        eprintln!(
            "note: could not delete the benchmark object {}: {e}",
            s3_uri(&bucket, &key)
        );
    }
    result?;

    println!(
        "{:<18} {:>12} {:>10} {:>10} {:>14}",
        "STEP", "BYTES", "SECONDS", "MiB/s", "FIRST BYTE ms"
    );
    for s in &steps {
        let fb = s
            .first_byte_ms
            .map(|f| format!("{f:.1}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<18} {:>12} {:>10.3} {:>10.1} {:>14}",
            s.name, s.bytes, s.seconds, s.mib_per_sec, fb
        );
    }
    let doc = serde_json::json!({"server": client.base, "file": args.file, "size": up.size, "steps": steps});
    std::fs::write(
        &args.output,
        serde_json::to_vec_pretty(&doc).expect("serialisable"),
    )
    .map_err(|e| CliError::local(format!("cannot write {}: {e}", args.output.display())))?;
    eprintln!("saved {}", args.output.display());
    Ok(())
}

async fn measure(
    client: &crate::client::Client,
    bucket: &str,
    key: &str,
    size: u64,
    skip_transcode: bool,
    steps: &mut Vec<Step>,
) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("nebula-benchmark-{}", std::process::id()));
    let t = Instant::now();
    let r = super::download::download(client, bucket, key, &tmp, true).await;
    let _ = std::fs::remove_file(&tmp);
    r?;
    steps.push(Step::new("download", size, t.elapsed(), None));

    let url = client.url(bucket, Some(key), &[]);
    let len = MIB.min(size.max(1));
    let (mut total, mut took) = (0u64, Duration::ZERO);
    for _ in 0..RANGES {
        let start = if size > len {
            rand::rng().random_range(0..=size - len)
        } else {
            0
        };
        let h = [("range", format!("bytes={start}-{}", start + len - 1))];
        let (n, d, _) = timed_get(client, &url, &h, &s3_uri(bucket, key)).await?;
        total += n;
        took += d;
    }
    steps.push(Step::new(
        &format!("ranged {}x1MiB", RANGES),
        total,
        took,
        None,
    ));

    if !skip_transcode {
        let turl = client.url(
            bucket,
            Some(key),
            &[("quality", "480"), ("transcode", "h264")],
        );
        let (n, d, first) = timed_get(
            client,
            &turl,
            &[],
            &format!("the 480p transcode of {}", s3_uri(bucket, key)),
        )
        .await?;
        steps.push(Step::new("transcode 480p", n, d, Some(first)));
    }
    Ok(())
}

/// GETs a URL to the end: (bytes, total time, time to first byte).
async fn timed_get(
    client: &crate::client::Client,
    url: &str,
    headers: &[(&str, String)],
    what: &str,
) -> Result<(u64, Duration, Duration)> {
    let t = Instant::now();
    let resp = client
        .send(Method::GET, url, headers, Body::Empty, what)
        .await?;
    let mut stream = resp.bytes_stream();
    let mut first = None;
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| client.connection_error(url, &e))?;
        first.get_or_insert_with(|| t.elapsed());
        n += chunk.len() as u64;
    }
    let total = t.elapsed();
    Ok((n, total, first.unwrap_or(total)))
}
