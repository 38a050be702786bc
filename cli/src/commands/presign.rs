//! `nebula presign`: a URL anyone can use for a limited time.

use std::time::Duration;

use reqwest::Method;

use super::{BucketArg, Ctx};
use crate::error::{CliError, Result};

/// S3's (and SigV4's) longest presigned lifetime.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Arguments of `nebula presign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Object key.
    key: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// Lifetime, like 30m, 1h, 2d (at most 7 days).
    #[arg(long, default_value = "1h", value_parser = parse_expiry)]
    expires: Duration,
    /// A URL for uploading (PUT) instead of downloading.
    #[arg(long, conflicts_with = "hls")]
    put: bool,
    /// The HLS master playlist of a video (`?stream=hls`): any HLS player opens it, and
    /// every URL inside expires with it.
    #[arg(long)]
    hls: bool,
}

/// Parses `--expires`, refusing lifetimes S3 would refuse.
pub fn parse_expiry(s: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 1h or 30m: {e}"))?;
    if d > MAX_EXPIRY {
        return Err(format!(
            "{s} is longer than the 7-day maximum of presigned URLs"
        ));
    }
    if d < Duration::from_secs(1) {
        return Err("the lifetime must be at least one second".into());
    }
    Ok(d)
}

/// Runs `nebula presign`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    let method = if args.put { Method::PUT } else { Method::GET };
    let query: &[(&str, &str)] = if args.hls { &[("stream", "hls")] } else { &[] };
    let url = client.presign(
        &method,
        &client.url(&bucket, Some(&args.key), query),
        args.expires,
    )?;
    if url.is_empty() {
        return Err(CliError::local("signing produced an empty URL"));
    }
    println!("{url}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_limits() {
        assert_eq!(parse_expiry("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_expiry("7d"), Ok(MAX_EXPIRY));
        assert!(parse_expiry("8d").is_err());
        assert!(parse_expiry("soon").is_err());
    }
}
