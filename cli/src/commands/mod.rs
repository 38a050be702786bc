//! One module per command; this one holds what they share.

pub mod benchmark;
pub mod buckets;
pub mod config;
pub mod download;
pub mod keys;
pub mod logs;
pub mod ls;
pub mod objects;
pub mod ping;
pub mod play;
pub mod presign;
pub mod share;
pub mod status;
pub mod transcode;
pub mod upload;

use crate::client::Client;
use crate::config::{Overrides, Settings};
use crate::error::Result;

/// What every command gets: the command-line overrides.
#[derive(Debug)]
pub struct Ctx {
    /// `--server`, `--region`.
    pub over: Overrides,
}

impl Ctx {
    /// A context for these overrides.
    pub fn new(over: Overrides) -> Self {
        Ctx { over }
    }

    /// Resolved settings (flags, environment, config file).
    pub fn settings(&self) -> Result<Settings> {
        Settings::resolve(&self.over)
    }

    /// Settings plus a client connected to the chosen server.
    pub async fn client(&self) -> Result<(Settings, Client)> {
        let s = self.settings()?;
        let c = Client::connect(&s).await?;
        Ok((s, c))
    }
}

/// The `--bucket` option shared by the object commands.
#[derive(Debug, Clone, clap::Args)]
pub struct BucketArg {
    /// Bucket (default: NEBULA_BUCKET or the config file's bucket).
    #[arg(long, short = 'b')]
    pub bucket: Option<String>,
}

/// Prints JSON to stdout, pretty for people.
pub fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("values serialise")
    );
}
