//! Command line and environment settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::store::space::MinFree;

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
    /// Create, list, change and delete scoped access keys (also while a gateway runs on the folder).
    Keys(KeysArgs),
}

/// Settings of `keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// Folder holding the buckets (as for `serve`); the keys are kept in its `.nebula` folder.
    #[arg(long, env = "NEBULA_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Catalog database (as for `serve`): with postgres://… the keys are kept there, shared by
    /// every gateway using it.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: KeysCommand,
}

pub use nebula_api_types::keys_cli::{GrantArgs, KeyCreateArgs, KeysCommand};

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
    /// Where to accept TCP connections: IP:PORT, HOST:PORT, INTERFACE:PORT (e.g. tailscale0:9000:
    /// that interface's address), several separated by commas, or `none` (with --tailscale).
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
    /// Free space writes must leave on the data folder's filesystem and on any bucket's own
    /// disk: a size (2GiB, 500M), a share of the filesystem (5%), or 0 for none. A write that
    /// would leave less gets 507 InsufficientStorage; reads, listings and deletes go on.
    #[arg(long, env = "NEBULA_MIN_FREE", default_value = "1GiB", value_parser = parse_min_free)]
    pub min_free: MinFree,
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
    /// Seconds in a lifecycle "day" (rules count Days in these). Only for tests: a real day
    /// unless set.
    #[arg(long, env = "NEBULA_LIFECYCLE_DAY_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub lifecycle_day_seconds: u64,
    /// Seconds a worker holds a job without renewing before another gateway may take it over.
    #[arg(long, env = "NEBULA_JOB_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_lease_secs: u64,
    /// Tries per transcode job (a lost worker or a pipeline error counts) before it fails.
    #[arg(long, env = "NEBULA_JOB_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub job_max_attempts: u32,
    /// PEM certificate chain to serve HTTPS on the listener (needs --tls-key).
    #[arg(long, env = "NEBULA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "NEBULA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Bucket anyone may read and list without signing (public-read); repeat, or comma-separate in the env.
    #[arg(
        long = "public-bucket",
        env = "NEBULA_PUBLIC_BUCKETS",
        value_delimiter = ','
    )]
    pub public_buckets: Vec<String>,
    /// Seconds a client may take to send a request's headers (and to finish the TLS handshake).
    #[arg(long, env = "NEBULA_HEADER_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Seconds a request body may go without data before the request fails (its upload is dropped).
    #[arg(long, env = "NEBULA_BODY_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,
    /// Serve Prometheus metrics at GET /metrics, without authentication, on this address (e.g.
    /// 127.0.0.1:9100; same forms as --listen). Off by default.
    #[arg(long, env = "NEBULA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// URL(s) other gateways and `nebula status` show for this gateway (comma-separated;
    /// default: the listeners' addresses, with the host name for 0.0.0.0 or [::]).
    #[arg(long, env = "NEBULA_ADVERTISE_URL", value_delimiter = ',')]
    pub advertise_url: Vec<String>,
    /// Seconds between this gateway's heartbeats in the catalog; a gateway silent for three
    /// of them is shown as stale. Give every gateway of a cluster the same value.
    #[arg(long, env = "NEBULA_HEARTBEAT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,
    #[command(flatten)]
    pub tailnet: TailnetArgs,
}

/// Settings of the in-process tailnet listener (the `tailscale` cargo feature).
#[derive(Debug, Clone, Args)]
pub struct TailnetArgs {
    /// Join a tailnet in-process (tailscale-rs) and serve on the node's tailnet address too.
    #[arg(long, env = "NEBULA_TAILSCALE")]
    pub tailscale: bool,
    /// Auth key for the node's first registration (TS_AUTH_KEY is read too); prefer the variable.
    #[arg(long, env = "TS_AUTHKEY", hide_env_values = true)]
    pub ts_authkey: Option<String>,
    /// Hostname the node asks the tailnet for.
    #[arg(long, env = "NEBULA_TS_HOSTNAME", default_value = "nebula")]
    pub ts_hostname: String,
    /// Control server URL (default: Tailscale's; e.g. a headscale server).
    #[arg(long, env = "TS_CONTROL_URL")]
    pub ts_control_url: Option<String>,
    /// Seconds to wait for the control server at each step (joining, address, peer lookups).
    #[arg(long, env = "NEBULA_TS_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub ts_timeout_secs: u64,
    /// Port on the tailnet address (default: the port of the first --listen address, else 9000).
    #[arg(long, env = "NEBULA_TS_PORT")]
    pub ts_port: Option<u16>,
    /// Tailnet nodes allowed to connect, by hostname or tag, e.g. laptop,tag:media (default: all).
    #[arg(long, env = "NEBULA_TAILSCALE_ALLOW", default_value = "")]
    pub tailscale_allow: String,
    /// Exit when the tailnet cannot be joined, instead of serving only the local listener.
    #[arg(long, env = "NEBULA_TAILSCALE_REQUIRED")]
    pub tailscale_required: bool,
}

/// Parses sizes like `500M`, `20G`, `1T` or plain bytes (`--rendition-cache-size`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mult = match s[i..]
                .to_ascii_uppercase()
                .trim_end_matches("IB")
                .trim_end_matches('B')
            {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1u64 << 40,
                _ => return None,
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses `--min-free`: a size as [`parse_size`] reads it, a percentage of the filesystem
/// (`5%`, `0.5%`), or 0 (`0`, `0%`) for no reserve.
pub fn parse_min_free(s: &str) -> Result<MinFree, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "'{s}': use a size like 2GiB or 500M, a share of the filesystem like 5%, or 0 for no reserve"
        )
    };
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        return if p == 0.0 {
            Ok(MinFree::Off)
        } else if p > 0.0 && p < 100.0 {
            Ok(MinFree::Percent(p))
        } else {
            Err(bad())
        };
    }
    match parse_size(t) {
        Some(0) => Ok(MinFree::Off),
        Some(b) => Ok(MinFree::Bytes(b)),
        None => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("500MiB"), Some(500 << 20));
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("12X"), None);
    }

    #[test]
    fn min_free() {
        assert_eq!(parse_min_free("2GiB"), Ok(MinFree::Bytes(2 << 30)));
        assert_eq!(parse_min_free("500MB"), Ok(MinFree::Bytes(500 << 20)));
        assert_eq!(parse_min_free("4096"), Ok(MinFree::Bytes(4096)));
        assert_eq!(parse_min_free("5%"), Ok(MinFree::Percent(5.0)));
        assert_eq!(parse_min_free(" 0.5 %"), Ok(MinFree::Percent(0.5)));
        assert_eq!(parse_min_free("0"), Ok(MinFree::Off));
        assert_eq!(parse_min_free("0%"), Ok(MinFree::Off));
        for bad in ["", "-1", "100%", "150%", "-5%", "x%", "1.5G", "NaN%", "12X"] {
            let e = parse_min_free(bad).expect_err(bad);
            assert!(e.contains("5%"), "{e}");
        }
    }

    #[test]
    fn min_free_defaults_to_one_gibibyte() {
        let cli = Cli::try_parse_from(["nebula-gateway"]).unwrap();
        assert_eq!(cli.serve.min_free, MinFree::Bytes(1 << 30));
        let cli = Cli::try_parse_from(["nebula-gateway", "--min-free", "5%"]).unwrap();
        assert_eq!(cli.serve.min_free, MinFree::Percent(5.0));
        assert!(Cli::try_parse_from(["nebula-gateway", "--min-free", "lots"]).is_err());
    }
}
