//! `nebula config` and `nebula login`: write the config file.

use std::io::{BufRead, Write};

use super::Ctx;
use crate::client::Client;
use crate::config::{FileConfig, Overrides, Servers, Settings, config_path, normalise_url};
use crate::error::{CliError, Result};

/// Arguments of `nebula config` / `nebula login` (use the global --server and --region for
/// the gateway URL and region).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// LAN URL tried first (with --remote-url).
    #[arg(long, value_name = "URL")]
    local_url: Option<String>,
    /// URL used when the local one does not answer.
    #[arg(long, value_name = "URL")]
    remote_url: Option<String>,
    /// Access key.
    #[arg(long)]
    access_key: Option<String>,
    /// Secret key.
    #[arg(long)]
    secret_key: Option<String>,
    /// Default bucket.
    #[arg(long, short = 'b')]
    bucket: Option<String>,
    /// Show the secret key instead of masking it.
    #[arg(long)]
    show_secret: bool,
}

fn apply(file: &mut FileConfig, over: &Overrides, a: &Args) -> bool {
    let mut changed = false;
    let mut set = |slot: &mut Option<String>, v: &Option<String>| {
        if let Some(v) = v {
            *slot = Some(v.clone());
            changed = true;
        }
    };
    set(
        &mut file.server_url,
        &over.server.as_deref().map(normalise_url),
    );
    set(
        &mut file.local_url,
        &a.local_url.as_deref().map(normalise_url),
    );
    set(
        &mut file.remote_url,
        &a.remote_url.as_deref().map(normalise_url),
    );
    set(&mut file.access_key, &a.access_key);
    set(&mut file.secret_key, &a.secret_key);
    set(&mut file.bucket, &a.bucket);
    set(&mut file.region, &over.region);
    changed
}

fn show(file: &FileConfig, show_secret: bool) {
    let mut f = file.clone();
    if !show_secret && let Some(s) = &mut f.secret_key {
        *s = format!(
            "{}… (hidden; --show-secret shows it)",
            s.chars().take(3).collect::<String>()
        );
    }
    print!("{}", toml::to_string_pretty(&f).unwrap_or_default());
}

/// Runs `nebula config`: sets the given fields, or shows the file when none is given.
pub async fn run_config(ctx: &Ctx, args: Args) -> Result<()> {
    let mut file = FileConfig::load()?;
    if apply(&mut file, &ctx.over, &args) {
        let path = file.save()?;
        eprintln!("saved {}", path.display());
    } else {
        eprintln!("# {}", config_path()?.display());
        show(&file, args.show_secret);
    }
    Ok(())
}

fn prompt(question: &str, current: Option<&str>) -> Result<Option<String>> {
    ask(question, current, false)
}

/// Asks for a secret: not echoed when typed at a terminal (piped input is read as a line).
fn prompt_secret(question: &str) -> Result<Option<String>> {
    ask(question, None, true)
}

fn ask(question: &str, current: Option<&str>, secret: bool) -> Result<Option<String>> {
    let mut err = std::io::stderr();
    match current {
        Some(c) => write!(err, "{question} [{c}]: "),
        None => write!(err, "{question}: "),
    }?;
    err.flush()?;
    let mut line = String::new();
    if secret && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        line = console::Term::stderr().read_secure_line()?;
    } else {
        std::io::stdin().lock().read_line(&mut line)?;
    }
    let line = line.trim();
    Ok(if line.is_empty() {
        current.map(str::to_owned)
    } else {
        Some(line.to_owned())
    })
}

/// Runs `nebula login`: asks for what is missing, checks the keys with a signed ListBuckets,
/// then saves.
pub async fn run_login(ctx: &Ctx, args: Args) -> Result<()> {
    let mut file = FileConfig::load()?;
    apply(&mut file, &ctx.over, &args);
    if file.server_url.is_none() && file.local_url.is_none() && file.remote_url.is_none() {
        file.server_url =
            prompt("Gateway URL (e.g. http://nas.local:9000)", None)?.map(|u| normalise_url(&u));
    }
    if args.access_key.is_none() {
        file.access_key = prompt("Access key", file.access_key.as_deref())?;
    }
    if args.secret_key.is_none() {
        file.secret_key = prompt_secret("Secret key")?.or(file.secret_key);
    }
    let (Some(access), Some(secret)) = (file.access_key.clone(), file.secret_key.clone()) else {
        return Err(CliError::Usage(
            "both an access key and a secret key are needed".into(),
        ));
    };
    let servers = match (&file.server_url, &file.local_url, &file.remote_url) {
        (Some(s), _, _) => Servers::Single(s.clone()),
        (None, Some(l), Some(r)) => Servers::LocalRemote {
            local: l.clone(),
            remote: r.clone(),
        },
        (None, Some(one), None) | (None, None, Some(one)) => Servers::Single(one.clone()),
        (None, None, None) => return Err(CliError::Usage("a gateway URL is needed".into())),
    };
    let settings = Settings {
        servers,
        keys: Some((access, secret)),
        bucket: file.bucket.clone(),
        region: file
            .region
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_REGION.to_owned()),
    };
    let client = Client::connect(&settings).await?;
    let buckets = client.list_buckets().await?;
    let path = file.save()?;
    eprintln!(
        "the keys work at {} ({} buckets); saved {}",
        client.base,
        buckets.len(),
        path.display()
    );
    Ok(())
}
