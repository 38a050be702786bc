//! `nebula play`: a presigned URL (optionally asking the gateway for a live H.264 transcode)
//! handed to mpv or VLC.

use std::time::Duration;

use reqwest::Method;

use super::{BucketArg, Ctx};
use crate::error::{CliError, Result};

/// Qualities the gateway can transcode to.
pub const QUALITIES: [&str; 5] = ["240", "360", "480", "720", "1080"];

/// Supported players.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Player {
    /// mpv.
    Mpv,
    /// VLC.
    Vlc,
}

impl Player {
    fn program(self) -> &'static str {
        match self {
            Player::Mpv => "mpv",
            Player::Vlc => "vlc",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Player::Mpv => "mpv (e.g. `sudo apt install mpv`, `brew install mpv`)",
            Player::Vlc => "vlc (e.g. `sudo apt install vlc`, `brew install --cask vlc`)",
        }
    }
}

/// Arguments of `nebula play`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Object key.
    key: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// Ask the gateway for a live H.264 transcode at this height.
    #[arg(long, short = 'q', value_parser = clap::builder::PossibleValuesParser::new(QUALITIES))]
    quality: Option<String>,
    /// Player to start.
    #[arg(long, value_enum, default_value = "mpv")]
    player: Player,
    /// Only print the URL.
    #[arg(long)]
    print_url: bool,
    /// How long the URL stays valid (long films need it for seeking near the end).
    #[arg(long, default_value = "12h", value_parser = super::presign::parse_expiry)]
    expires: Duration,
    /// Extra arguments for the player, after `--` (e.g. `-- --fullscreen`).
    #[arg(last = true)]
    player_args: Vec<String>,
}

/// The presigned playback URL, with the transcode request inside the signature so it cannot
/// be altered.
pub fn playback_url(
    client: &crate::client::Client,
    bucket: &str,
    key: &str,
    quality: Option<&str>,
    expires: Duration,
) -> Result<String> {
    let query: Vec<(&str, &str)> = match quality {
        Some(q) => vec![("quality", q), ("transcode", "h264")],
        None => vec![],
    };
    client.presign(
        &Method::GET,
        &client.url(bucket, Some(key), &query),
        expires,
    )
}

/// Runs `nebula play`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    // Check the object first: a player would only say "failed to open" for a typo.
    client.head_object(&bucket, &args.key).await?;
    let url = playback_url(
        &client,
        &bucket,
        &args.key,
        args.quality.as_deref(),
        args.expires,
    )?;
    if args.print_url {
        println!("{url}");
        return Ok(());
    }
    let program = args.player.program();
    let status = tokio::process::Command::new(program)
        .args(&args.player_args)
        .arg(&url)
        .status()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::local(format!("{program} is not installed: install the package {}, or choose another with --player", args.player.package())),
            _ => CliError::local(format!("cannot start {program}: {e}")),
        })?;
    if !status.success() {
        return Err(CliError::local(format!("{program} exited with {status}")));
    }
    Ok(())
}
