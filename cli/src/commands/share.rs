//! `nebula share`: a link to one object that anyone can open, for a while (at most 7 days,
//! SigV4's limit): a presigned GET, optionally of a quality the gateway transcodes to, made
//! only after checking the object is there.

use std::time::Duration;

use super::play::{QUALITIES, Stream, playback_url};
use super::{BucketArg, Ctx};
use crate::error::{CliError, Result};
use crate::s3::s3_uri;

/// Arguments of `nebula share`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Object key.
    key: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// How long the link works, like 1h or 2d (at most 7 days).
    #[arg(long, default_value = "7d", value_parser = super::presign::parse_expiry)]
    expires: Duration,
    /// Share a live H.264 transcode at this height instead of the original file.
    #[arg(long, short = 'q', value_parser = clap::builder::PossibleValuesParser::new(QUALITIES))]
    quality: Option<String>,
}

/// Runs `nebula share`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    // A link to a typo would only fail for the person it is sent to.
    client.head_object(&bucket, &args.key).await?;
    let stream = match args.quality.as_deref() {
        Some(q) => Stream::Live(q),
        None => Stream::Original,
    };
    let url = playback_url(&client, &bucket, &args.key, stream, args.expires)?;
    let until = time::OffsetDateTime::now_utc() + args.expires;
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| CliError::local(format!("cannot format the expiry time: {e}")))?;
    println!("{url}");
    let what = match &args.quality {
        Some(q) => format!("{} at {q}p", s3_uri(&bucket, &args.key)),
        None => s3_uri(&bucket, &args.key),
    };
    eprintln!("anyone with this link can read {what} until {until} (UTC)");
    Ok(())
}
