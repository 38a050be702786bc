//! `nebula keys …`: the gateway's scoped access keys through its API (`/_nebula/v1/keys`,
//! admin key only). The same verbs as `nebula-gateway keys` on the server's data folder.

use nebula_api_types::keys::{CreateKey, KeyInfo, KeyList, NewKey};
use nebula_api_types::keys_cli::{KeyCreateArgs, KeysCommand};

use super::{Ctx, print_json};
use crate::error::Result;

/// Arguments of `nebula keys`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
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
        KeysCommand::Create(KeyCreateArgs {
            name,
            expires,
            rights,
            json,
        }) => {
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
        KeysCommand::List { json } => {
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
        KeysCommand::Show { id, json } => {
            let k: KeyInfo = client.api_get(&key_path(&id, ""), &[]).await?;
            show(&k, json);
        }
        KeysCommand::Delete { id } => {
            let k: KeyInfo = client.api_delete(&key_path(&id, "")).await?;
            println!("deleted access key {} ('{}')", k.access_key_id, k.name);
        }
        KeysCommand::Allow { id, rights, json } => {
            let k: KeyInfo = client
                .api_post(&key_path(&id, "/allow"), &rights.change())
                .await?;
            show(&k, json);
        }
        KeysCommand::Deny { id, rights, json } => {
            let k: KeyInfo = client
                .api_post(&key_path(&id, "/deny"), &rights.change())
                .await?;
            show(&k, json);
        }
    }
    Ok(())
}
