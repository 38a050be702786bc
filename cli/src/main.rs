//! `nebula`: the command-line client of the Nebula gateway.
//!
//! It speaks only S3 (SigV4-signed) and the gateway's `/_nebula/v1/` JSON API, so the S3
//! commands (upload, ls, download, presign, play without --quality) also work against other
//! S3 servers.

mod client;
mod commands;
mod config;
mod error;
mod progress;
mod s3;
mod sign;

use clap::{Parser, Subcommand};

use crate::commands::Ctx;
use crate::config::Overrides;
use crate::error::CliError;

const AFTER_HELP: &str = "\
Configuration:
  NEBULA_SERVER_URL, or NEBULA_LOCAL_URL + NEBULA_REMOTE_URL (local tried for ~1 s first);
  NEBULA_ACCESS_KEY / NEBULA_SECRET_KEY; NEBULA_BUCKET; NEBULA_REGION (default us-east-1);
  otherwise the config file written by `nebula config` / `nebula login`
  ($XDG_CONFIG_HOME/nebula/config.toml or ~/.config/nebula/config.toml).

Exit codes:
  0  success
  1  local error (files, configuration, verification, player not installed)
  2  usage error (bad command line)
  3  remote error (the server answered and refused: wrong keys, missing object, ...)
  4  connection error (the server could not be reached)";

/// The command-line client of the Nebula gateway.
#[derive(Debug, Parser)]
#[command(name = "nebula", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Gateway URL (overrides NEBULA_SERVER_URL and the config file).
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// SigV4 region (overrides NEBULA_REGION and the config file).
    #[arg(long, global = true)]
    region: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the gateway answers: latency and version.
    Ping(commands::ping::Args),
    /// Upload files (multipart, parallel, resumable).
    Upload(commands::upload::Args),
    /// List objects with size, type, date and media info.
    Ls(commands::ls::Args),
    /// Download an object (resumes a partial file, verifies it).
    Download(commands::download::Args),
    /// Delete objects (-r: every key under a prefix, or the whole bucket).
    Rm(commands::objects::RmArgs),
    /// Copy an object on the server (to another key or bucket).
    Cp(commands::objects::CopyArgs),
    /// Move (rename) an object on the server.
    Mv(commands::objects::CopyArgs),
    /// Make a bucket.
    Mb(commands::buckets::MbArgs),
    /// Remove an empty bucket.
    Rb(commands::buckets::RbArgs),
    /// Play an object (optionally transcoded) in mpv or VLC.
    Play(commands::play::Args),
    /// Queue transcodes of an object.
    Transcode(commands::transcode::TranscodeArgs),
    /// Show the transcode jobs of an object.
    TranscodeStatus(commands::transcode::StatusArgs),
    /// List transcode jobs.
    TranscodeJobs(commands::transcode::JobsArgs),
    /// Cancel a transcode job.
    TranscodeCancel(commands::transcode::CancelArgs),
    /// The gateway's health as a dashboard.
    Status(commands::status::Args),
    /// Show the gateway's recent log lines (-f: keep following).
    Logs(commands::logs::Args),
    /// Create, list, change and delete the gateway's scoped access keys (admin key only).
    Keys(commands::keys::Args),
    /// Measure upload, download, ranged reads and transcoding.
    Benchmark(commands::benchmark::Args),
    /// Print a presigned URL.
    Presign(commands::presign::Args),
    /// Print a link anyone can open for a while (default 7 days), optionally transcoded.
    Share(commands::share::Args),
    /// Show or change the config file.
    Config(commands::config::Args),
    /// Set server and keys interactively and check them.
    Login(commands::config::Args),
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(error::EXIT_LOCAL);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(()) => error::EXIT_OK,
        Err(e) => {
            let cli_err = e.downcast_ref::<CliError>();
            eprintln!("error: {e:#}");
            cli_err.map_or(error::EXIT_LOCAL, CliError::exit_code)
        }
    };
    // Dropping the runtime would wait for lingering blocking tasks (stdin readers); exit now.
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(Overrides {
        server: cli.server,
        region: cli.region,
    });
    match cli.command {
        Command::Ping(a) => commands::ping::run(&ctx, a).await?,
        Command::Upload(a) => commands::upload::run(&ctx, a).await?,
        Command::Ls(a) => commands::ls::run(&ctx, a).await?,
        Command::Download(a) => commands::download::run(&ctx, a).await?,
        Command::Rm(a) => commands::objects::run_rm(&ctx, a).await?,
        Command::Cp(a) => commands::objects::run_copy(&ctx, a, false).await?,
        Command::Mv(a) => commands::objects::run_copy(&ctx, a, true).await?,
        Command::Mb(a) => commands::buckets::run_mb(&ctx, a).await?,
        Command::Rb(a) => commands::buckets::run_rb(&ctx, a).await?,
        Command::Play(a) => commands::play::run(&ctx, a).await?,
        Command::Transcode(a) => commands::transcode::run_transcode(&ctx, a).await?,
        Command::TranscodeStatus(a) => commands::transcode::run_status(&ctx, a).await?,
        Command::TranscodeJobs(a) => commands::transcode::run_jobs(&ctx, a).await?,
        Command::TranscodeCancel(a) => commands::transcode::run_cancel(&ctx, a).await?,
        Command::Status(a) => commands::status::run(&ctx, a).await?,
        Command::Logs(a) => commands::logs::run(&ctx, a).await?,
        Command::Keys(a) => commands::keys::run(&ctx, a).await?,
        Command::Benchmark(a) => commands::benchmark::run(&ctx, a).await?,
        Command::Presign(a) => commands::presign::run(&ctx, a).await?,
        Command::Share(a) => commands::share::run(&ctx, a).await?,
        Command::Config(a) => commands::config::run_config(&ctx, a).await?,
        Command::Login(a) => commands::config::run_login(&ctx, a).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
