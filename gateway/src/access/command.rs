//! `nebula-gateway keys …`: manages the scoped keys of a data folder (or of the shared
//! PostgreSQL catalog) directly, also while gateways run on it: they see each change with
//! their next request.

use anyhow::Context;
use nebula_api_types::keys::{CreateKey, KeyInfo, NewKey};

use super::KeyStore;
use crate::catalog::Catalog;
use crate::config::{KeysArgs, KeysCommand};

/// Runs one `keys` command.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let internal = args.data_dir.join(crate::store::RESERVED_DIR);
    let keys = match args.database_url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let catalog = Catalog::connect(Some(url), &internal)?;
            catalog.migrate().await.context("opening the catalog")?;
            KeyStore::in_catalog(catalog)
        }
        _ => {
            std::fs::create_dir_all(&internal)
                .with_context(|| format!("creating {}", internal.display()))?;
            std::fs::set_permissions(
                &internal,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )?;
            KeyStore::in_folder(&internal)
        }
    };
    // The admin pair is not a scoped key; a new key id never takes its name.
    let admin = crate::credentials::stored_access_key(&internal);
    match args.command {
        KeysCommand::Create(a) => {
            let req = CreateKey {
                name: a.name,
                expires: a.expires,
                rights: a.rights.change(),
            };
            let new = keys.create(req, admin).await?;
            print_new(&new, a.json);
        }
        KeysCommand::List { json } => {
            let list = keys.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                eprintln!(
                    "no scoped keys yet: create one with `nebula-gateway keys create --name NAME --read BUCKET`"
                );
            } else {
                for k in &list {
                    println!("{}", k.line());
                }
            }
        }
        KeysCommand::Show { id, json } => print_key(&keys.show(&id).await?, json)?,
        KeysCommand::Delete { id } => {
            let k = keys.delete(&id).await?;
            println!("deleted access key {} ('{}')", k.access_key_id, k.name);
        }
        KeysCommand::Allow { id, rights, json } => {
            print_key(&keys.allow(&id, rights.change()).await?, json)?
        }
        KeysCommand::Deny { id, rights, json } => {
            print_key(&keys.deny(&id, rights.change()).await?, json)?
        }
    }
    Ok(())
}

fn print_key(k: &KeyInfo, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(k)?);
    } else {
        println!("{}", k.line());
    }
    Ok(())
}

fn print_new(new: &NewKey, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(new).expect("a key serialises")
        );
        return;
    }
    println!("{}", new.summary());
    println!("The secret is shown only now: keep it somewhere safe.");
}
