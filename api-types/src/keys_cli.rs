//! The `keys` verbs on the command line (clap), one definition for `nebula keys` (which sends
//! them to the API) and `nebula-gateway keys` (which applies them to the data folder).

use crate::keys::GrantChange;

/// What `keys` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, with its secret (shown this once).
    Create(KeyCreateArgs),
    /// List the keys (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one key.
    Show {
        /// Access key id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key: requests signed with it are refused from now on.
    Delete {
        /// Access key id.
        id: String,
    },
    /// Give a key more rights.
    Allow {
        /// Access key id.
        id: String,
        #[command(flatten)]
        rights: GrantArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take rights away from a key (--write also takes owner; a bucket left with none is dropped).
    Deny {
        /// Access key id.
        id: String,
        #[command(flatten)]
        rights: GrantArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `keys create`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyCreateArgs {
    /// A name for people ("tv", "phone backup").
    #[arg(long)]
    pub name: String,
    /// When the key stops working: a date (2027-01-31), an RFC 3339 time, or a duration (30d, 12h).
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
    #[command(flatten)]
    pub rights: GrantArgs,
    /// Print the key as JSON ({"access_key_id": …, "secret_access_key": …, …}).
    #[arg(long)]
    pub json: bool,
}

/// Per-bucket rights on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct GrantArgs {
    /// Bucket the key may read (list, get, head, media, HLS); repeat for more.
    #[arg(long, value_name = "BUCKET")]
    pub read: Vec<String>,
    /// Bucket the key may write (put, delete, multipart, copy into); includes read unless --write-only.
    #[arg(long, value_name = "BUCKET")]
    pub write: Vec<String>,
    /// Bucket the key owns (settings, policy, ACL, CORS, deleting it); includes read and write.
    #[arg(long, value_name = "BUCKET")]
    pub owner: Vec<String>,
    /// --write without read: an upload-only key (a phone's camera backup).
    #[arg(long)]
    pub write_only: bool,
    /// May create buckets (and owns those it creates).
    #[arg(long)]
    pub create_buckets: bool,
    /// Only keys under this prefix in the buckets named here.
    #[arg(long)]
    pub prefix: Option<String>,
}

impl GrantArgs {
    /// As the API's type.
    pub fn change(&self) -> GrantChange {
        GrantChange {
            read: self.read.clone(),
            write: self.write.clone(),
            owner: self.owner.clone(),
            write_only: self.write_only,
            create_buckets: self.create_buckets,
            prefix: self.prefix.clone(),
        }
    }
}
