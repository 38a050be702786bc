//! `nebula-gateway`: the server binary.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use nebula_gateway::config::{Cli, Command, ServeArgs};
use nebula_gateway::{build_front, credentials, server, store};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => cli.serve,
    };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = store::Store::open(&args.data_dir).with_context(|| format!("opening data folder {}", args.data_dir.display()))?;
    let (creds, generated) = credentials::resolve(args.access_key.clone(), args.secret_key.clone(), store.internal_dir())?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let endpoint = format!("http://{addr}");
    tracing::info!(data_dir = %store.root().display(), metadata = ?store.meta_store(), "data folder ready");
    print_banner(&endpoint, &args.region, &creds, generated, store.internal_dir());
    let front = build_front(Arc::new(store), &args.region, &creds, args.domain.as_deref());
    server::serve_tcp(listener, front, server::shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(endpoint: &str, region: &str, c: &credentials::Credentials, generated: bool, internal: &std::path::Path) {
    let origin = if generated {
        format!("generated now and kept in {}", internal.join("credentials.json").display())
    } else {
        "as configured".to_owned()
    };
    println!("Nebula gateway listening on {endpoint}");
    println!("  region      {region}");
    println!("  access key  {}", c.access_key);
    println!("  secret key  {}  ({origin})", c.secret_key);
    println!();
    println!("  aws:    AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {endpoint} s3 ls", c.access_key, c.secret_key);
    println!(
        "  rclone: rclone lsd ':s3,provider=Other,endpoint={endpoint},access_key_id={},secret_access_key={}:'",
        c.access_key, c.secret_key
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
