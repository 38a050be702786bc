//! `nebula play`: a presigned URL handed to mpv or VLC: the stored bytes, or (with
//! `--quality`) the gateway's HLS stream, adaptive with `auto`, or its live fMP4 transcode
//! with `--live`.

use std::time::Duration;

use reqwest::Method;

use super::{BucketArg, Ctx};
use crate::error::{CliError, Result};

/// Qualities the gateway can transcode to.
pub const QUALITIES: [&str; 5] = ["240", "360", "480", "720", "1080"];

/// What `--quality` accepts: a transcoded height, `auto` (the HLS master playlist: the player
/// picks and switches) or `original` (the stored bytes).
const QUALITY_VALUES: [&str; 7] = ["240", "360", "480", "720", "1080", "auto", "original"];

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
    /// Play a transcode at this height (HLS, produced on demand, seekable), `auto` (HLS with
    /// every height: the player adapts to the network) or `original` (the stored bytes, the
    /// default).
    #[arg(long, short = 'q', value_parser = clap::builder::PossibleValuesParser::new(QUALITY_VALUES))]
    quality: Option<String>,
    /// With a height: the single live fMP4 transcode instead of HLS (plays at once, but
    /// cannot seek ahead of what was transcoded).
    #[arg(long)]
    live: bool,
    /// Start playing here: seconds, M:SS or H:MM:SS (e.g. 1:23:45). HLS playlists begin there
    /// (mpv and ffplay cannot seek in fMP4 HLS); other streams pass it to the player.
    #[arg(long, value_parser = parse_start)]
    start: Option<u64>,
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

/// What to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream<'a> {
    /// The stored bytes.
    Original,
    /// The HLS master playlist (every height).
    HlsAuto,
    /// The HLS media playlist of one height.
    Hls(&'a str),
    /// The live fMP4 transcode at one height.
    Live(&'a str),
}

impl<'a> Stream<'a> {
    /// From `--quality` and `--live`.
    fn of(quality: Option<&'a str>, live: bool) -> Result<Self> {
        Ok(match (quality, live) {
            (None | Some("original"), false) => Stream::Original,
            (Some("auto"), false) => Stream::HlsAuto,
            (Some(q), false) => Stream::Hls(q),
            (Some(q), true) if QUALITIES.contains(&q) => Stream::Live(q),
            _ => {
                return Err(CliError::local(
                    "--live needs a height: --quality 240, 360, 480, 720 or 1080",
                ));
            }
        })
    }

    /// The query asking the gateway for it.
    pub fn query(self) -> Vec<(&'static str, &'a str)> {
        match self {
            Stream::Original => vec![],
            Stream::HlsAuto => vec![("stream", "hls")],
            Stream::Hls(q) => vec![("stream", "hls"), ("quality", q)],
            Stream::Live(q) => vec![("quality", q), ("transcode", "h264")],
        }
    }

    /// HLS playlists, which start where `--start` says themselves (`at=`).
    fn is_hls(self) -> bool {
        matches!(self, Stream::HlsAuto | Stream::Hls(_))
    }
}

/// `--start`: seconds, `M:SS` or `H:MM:SS`.
pub fn parse_start(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{s:?} is not a position like 90, 1:30 or 1:23:45");
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let mut total = 0u64;
    for (i, p) in parts.iter().enumerate() {
        let n: u64 = p.parse().map_err(|_| bad())?;
        if i > 0 && n >= 60 {
            return Err(bad());
        }
        total = total * 60 + n;
    }
    Ok(total)
}

/// The presigned playback URL, with the stream request inside the signature so it cannot be
/// altered (the gateway presigns the URLs inside HLS playlists the same way).
pub fn playback_url(
    client: &crate::client::Client,
    bucket: &str,
    key: &str,
    stream: Stream<'_>,
    expires: Duration,
) -> Result<String> {
    let query = stream.query();
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
    let stream = Stream::of(args.quality.as_deref(), args.live)?;
    let url = match (stream.is_hls(), args.start) {
        // mpv and ffplay (FFmpeg 5.1) cannot seek in fMP4 HLS: the gateway's playlists begin
        // at the segment holding `at` instead, and name the exact moment (EXT-X-START).
        (true, Some(at)) => {
            let at = at.to_string();
            let mut query = stream.query();
            query.push(("at", &at));
            client.presign(
                &Method::GET,
                &client.url(&bucket, Some(&args.key), &query),
                args.expires,
            )?
        }
        _ => playback_url(&client, &bucket, &args.key, stream, args.expires)?,
    };
    if args.print_url {
        println!("{url}");
        return Ok(());
    }
    let program = args.player.program();
    let start = args
        .start
        .filter(|_| !stream.is_hls())
        .map(|s| match args.player {
            Player::Mpv => format!("--start={s}"),
            Player::Vlc => format!("--start-time={s}"),
        });
    let status = tokio::process::Command::new(program)
        .args(start)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions() {
        assert_eq!(parse_start("90"), Ok(90));
        assert_eq!(parse_start("1:30"), Ok(90));
        assert_eq!(parse_start("1:23:45"), Ok(5025));
        for bad in ["", "1:", "1:60", "a", "1:2:3:4", "-5"] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn streams() {
        assert_eq!(Stream::of(None, false).unwrap(), Stream::Original);
        assert_eq!(
            Stream::of(Some("original"), false).unwrap(),
            Stream::Original
        );
        assert_eq!(
            Stream::of(Some("auto"), false).unwrap().query(),
            [("stream", "hls")]
        );
        assert_eq!(
            Stream::of(Some("480"), false).unwrap().query(),
            [("stream", "hls"), ("quality", "480")]
        );
        assert_eq!(
            Stream::of(Some("480"), true).unwrap().query(),
            [("quality", "480"), ("transcode", "h264")]
        );
        assert!(Stream::of(Some("auto"), true).is_err());
        assert!(Stream::of(None, true).is_err());
    }
}
