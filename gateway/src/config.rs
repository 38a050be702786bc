//! Command line and environment settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// nebula-gateway: an S3-compatible gateway over a plain folder, with media extensions.
#[derive(Debug, Parser)]
#[command(name = "nebula-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands; `serve` is the default.
// Parsed once at start: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Bring the catalog in step with the data folder (or rebuild a lost one), print the counts and exit.
    Reindex(ReindexArgs),
}

/// Settings of `reindex`.
#[derive(Debug, Clone, Args)]
pub struct ReindexArgs {
    /// Folder holding the buckets (as for `serve`).
    #[arg(long, env = "NEBULA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Catalog database: sqlite:PATH or postgres://USER@HOST/DB (default: DATA/.nebula/catalog.sqlite).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Folder holding the buckets (one sub-folder each) and the gateway's `.nebula` state.
    #[arg(long, env = "NEBULA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "NEBULA_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Region this gateway answers for (SigV4 scopes must name it).
    #[arg(long, env = "NEBULA_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Access key; with neither key given, a pair is generated and kept in the data folder.
    #[arg(long, env = "NEBULA_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// Secret key.
    #[arg(long, env = "NEBULA_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Catalog database: sqlite:PATH or postgres://USER@HOST/DB (default: DATA/.nebula/catalog.sqlite).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Base domain for virtual-host style requests (`<bucket>.<domain>`); path style always works.
    #[arg(long, env = "NEBULA_DOMAIN")]
    pub domain: Option<String>,
    /// H.264 encoder for transcodes: auto (VA-API if it works, else x264, else openh264), or force one.
    #[arg(long, env = "NEBULA_ENCODER", default_value = "auto", value_parser = ["auto", "vaapi", "x264", "openh264"])]
    pub encoder: String,
    /// Most on-the-fly transcodes at once (default: the number of cores); more get 503 SlowDown.
    #[arg(long, env = "NEBULA_MAX_TRANSCODES")]
    pub max_transcodes: Option<usize>,
    /// Disk space for finished renditions (e.g. 500M, 20G); least recently used are evicted.
    #[arg(long, env = "NEBULA_RENDITION_CACHE_SIZE", default_value = "10G")]
    pub rendition_cache_size: String,
    /// Background transcode workers in this gateway (0: only queue, others do the work).
    #[arg(long, env = "NEBULA_TRANSCODE_WORKERS", default_value_t = 1)]
    pub transcode_workers: usize,
    /// Qualities queued as background jobs whenever a video is written, e.g. 480,720 (off by default).
    #[arg(long, env = "NEBULA_AUTO_TRANSCODE", default_value = "")]
    pub auto_transcode: String,
    /// Queue an H.264 MP4 rendition at the source's height (at most 1080) for videos browsers cannot play (MKV, AVI, HEVC, ...).
    #[arg(long, env = "NEBULA_AUTO_WEB_FRIENDLY")]
    pub auto_web_friendly: bool,
    /// Seconds a worker holds a job without renewing before another gateway may take it over.
    #[arg(long, env = "NEBULA_JOB_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_lease_secs: u64,
    /// Tries per transcode job (a lost worker or a pipeline error counts) before it fails.
    #[arg(long, env = "NEBULA_JOB_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub job_max_attempts: u32,
}
