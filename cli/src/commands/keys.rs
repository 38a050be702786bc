//! `nebula keys …`: the gateway's scoped access keys through its API (`/_nebula/v1/keys`,
//! admin key only). The same verbs as `nebula-gateway keys` on the server's data folder.

use nebula_api_types::keys::{CreateKey, GrantChange, KeyInfo, KeyList, NewKey};

use super::{Ctx, print_json};
use crate::error::Result;

/// Arguments of `nebula keys`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Create a key and print it, with its secret (shown this once).
    Create {
        /// A name for people ("tv", "phone backup").
        #[arg(long)]
        name: String,
        /// When the key stops working: a date (2027-01-31), an RFC 3339 time, or a duration (30d, 12h).
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
        #[command(flatten)]
        rights: Rights,
        /// Print the key as JSON ({"access_key_id": …, "secret_access_key": …, …}).
        #[arg(long)]
        json: bool,
    },
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
        rights: Rights,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take rights away from a key (--write also takes owner; a bucket left with none is dropped).
    Deny {
        /// Access key id.
        id: String,
        #[command(flatten)]
        rights: Rights,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Per-bucket rights on the command line.
#[derive(Debug, clap::Args)]
struct Rights {
    /// Bucket the key may read (list, get, head, media, HLS); repeat for more.
    #[arg(long, value_name = "BUCKET")]
    read: Vec<String>,
    /// Bucket the key may write (put, delete, multipart, copy into); includes read unless --write-only.
    #[arg(long, value_name = "BUCKET")]
    write: Vec<String>,
    /// Bucket the key owns (settings, policy, ACL, CORS, deleting it); includes read and write.
    #[arg(long, value_name = "BUCKET")]
    owner: Vec<String>,
    /// --write without read: an upload-only key (a phone's camera backup).
    #[arg(long)]
    write_only: bool,
    /// May create buckets (and owns those it creates).
    #[arg(long)]
    create_buckets: bool,
    /// Only keys under this prefix in the buckets named here.
    #[arg(long)]
    prefix: Option<String>,
}

impl Rights {
    fn change(self) -> GrantChange {
        GrantChange {
            read: self.read,
            write: self.write,
            owner: self.owner,
            write_only: self.write_only,
            create_buckets: self.create_buckets,
            prefix: self.prefix,
        }
    }
}

fn show(k: &KeyInfo, json: bool) {
    if json {
        print_json(k);
    } else {
        println!("{}", k.line());
    }
}

/// Key ids are letters and digits; anything else would change the API path.
fn key_path(id: &str, tail: &str) -> String {
    let id: String =
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!("keys/{id}{tail}")
}

/// Runs `nebula keys`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (_, client) = ctx.client().await?;
    match args.command {
        Verb::Create {
            name,
            expires,
            rights,
            json,
        } => {
            let req = CreateKey {
                name,
                expires,
                rights: rights.change(),
            };
            let new: NewKey = client.api_post("keys", &req).await?;
            if json {
                print_json(&new);
            } else {
                println!("{}", new.summary());
                eprintln!("The secret is shown only now: keep it somewhere safe.");
            }
        }
        Verb::List { json } => {
            let KeyList { keys } = client.api_get("keys", &[]).await?;
            if json {
                print_json(&keys);
            } else if keys.is_empty() {
                eprintln!(
                    "no scoped keys yet: create one with `nebula keys create --name NAME --read BUCKET`"
                );
            } else {
                for k in &keys {
                    println!("{}", k.line());
                }
            }
        }
        Verb::Show { id, json } => {
            let k: KeyInfo = client.api_get(&key_path(&id, ""), &[]).await?;
            show(&k, json);
        }
        Verb::Delete { id } => {
            let k: KeyInfo = client.api_delete(&key_path(&id, "")).await?;
            println!("deleted access key {} ('{}')", k.access_key_id, k.name);
        }
        Verb::Allow { id, rights, json } => {
            let k: KeyInfo = client
                .api_post(&key_path(&id, "/allow"), &rights.change())
                .await?;
            show(&k, json);
        }
        Verb::Deny { id, rights, json } => {
            let k: KeyInfo = client
                .api_post(&key_path(&id, "/deny"), &rights.change())
                .await?;
            show(&k, json);
        }
    }
    Ok(())
}
