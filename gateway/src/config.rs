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
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
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
    /// Catalog database (default: SQLite in the data folder).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Base domain for virtual-host style requests (`<bucket>.<domain>`); path style always works.
    #[arg(long, env = "NEBULA_DOMAIN")]
    pub domain: Option<String>,
}
