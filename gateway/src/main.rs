//! `nebula-gateway`: the server binary.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use nebula_gateway::catalog::Catalog;
use nebula_gateway::config::{Cli, Command, ReindexArgs, ServeArgs};
use nebula_gateway::transcode::{MediaService, parse_size};
use nebula_gateway::{build_front, credentials, jobs, s3, server, store};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,s3s::ops=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Serve(a)) => runtime.block_on(serve(a)),
        Some(Command::Reindex(a)) => runtime.block_on(reindex(a)),
        None => runtime.block_on(serve(cli.serve)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auto_qualities = jobs::parse_qualities(&args.auto_transcode)
        .map_err(|e| anyhow::anyhow!("--auto-transcode: {e}"))?;
    let store = store::Store::open(&args.data_dir)
        .with_context(|| format!("opening data folder {}", args.data_dir.display()))?;
    let (creds, generated) = credentials::resolve(
        args.access_key.clone(),
        args.secret_key.clone(),
        store.internal_dir(),
    )?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let endpoint = format!("http://{addr}");
    tracing::info!(data_dir = %store.root().display(), metadata = ?store.meta_store(), "data folder ready");
    print_banner(
        &endpoint,
        &args.region,
        &creds,
        generated,
        store.internal_dir(),
    );
    let media = start_media(&args, store.internal_dir()).await?;
    let store = Arc::new(store);
    let catalog = Catalog::start(args.database_url.as_deref(), store.clone())
        .await
        .context("opening the catalog")?;
    if let Some(svc) = &media {
        catalog.start_prober(store.clone(), svc.engine().clone());
    }
    let jobs_config = jobs::JobsConfig {
        workers: args.transcode_workers,
        lease: std::time::Duration::from_secs(args.job_lease_secs),
        max_attempts: args.job_max_attempts,
        auto_qualities,
        auto_web_friendly: args.auto_web_friendly,
    };
    let auto = !jobs_config.auto_qualities.is_empty() || jobs_config.auto_web_friendly;
    let jobs = jobs::Jobs::new(catalog.clone(), store.clone(), media.clone(), jobs_config);
    jobs.start();
    let mut gateway = s3::Gateway::new(store, args.region.clone());
    gateway.media = media;
    let catalog_events: Arc<dyn s3::ObjectEvents> = Arc::new(catalog.clone());
    // The auto-transcode rules see every write right after the catalog recorded it.
    gateway.events = Some(if auto {
        Arc::new(jobs::JobEvents::new(catalog_events, jobs.clone()))
    } else {
        catalog_events
    });
    let api = nebula_gateway::api::ApiState {
        started: std::time::Instant::now(),
        store: gateway.store.clone(),
        media: gateway.media.clone(),
        catalog: Some(catalog),
        jobs: Some(jobs.clone()),
    };
    let front = build_front(gateway, api, &creds, args.domain.as_deref());
    server::serve_tcp(listener, front, server::shutdown_signal()).await;
    // Running jobs go back to the queue instead of holding the exit until they finish.
    jobs.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// `reindex`: reconciles the catalog with the data folder (rebuilding a lost database) and
/// prints what changed.
async fn reindex(args: ReindexArgs) -> anyhow::Result<()> {
    let store = store::Store::open_shared(&args.data_dir)
        .with_context(|| format!("opening data folder {}", args.data_dir.display()))?;
    let store = Arc::new(store);
    let catalog = Catalog::connect(args.database_url.as_deref(), store.internal_dir())?;
    catalog.migrate().await.context("opening the catalog")?;
    let started = std::time::Instant::now();
    let report = catalog
        .reconcile(store)
        .await
        .context("reconciling the catalog")?;
    println!(
        "reindexed {report} ({} catalog, {:.1} s)",
        catalog.engine(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts GStreamer and picks the encoder. With `--encoder auto` a machine without GStreamer
/// still serves S3 (media extensions off); a forced encoder that cannot run stops the start.
async fn start_media(
    args: &ServeArgs,
    internal: &std::path::Path,
) -> anyhow::Result<Option<Arc<MediaService>>> {
    let choice: nebula_media::EncoderChoice = args
        .encoder
        .parse()
        .map_err(|e| anyhow::anyhow!("--encoder: {e}"))?;
    let engine = match tokio::task::spawn_blocking(move || nebula_media::MediaEngine::new(choice))
        .await?
    {
        Ok(engine) => engine,
        Err(e) if choice == nebula_media::EncoderChoice::Auto => {
            tracing::warn!(error = %e, "media extensions disabled: transcoding is not available on this machine");
            return Ok(None);
        }
        Err(e) => anyhow::bail!(
            "the encoder forced with --encoder {} cannot run here: {e}",
            args.encoder
        ),
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let max = args.max_transcodes.unwrap_or(cores);
    let limit = parse_size(&args.rendition_cache_size).with_context(|| {
        format!(
            "--rendition-cache-size {}: use a size like 500M or 20G",
            args.rendition_cache_size
        )
    })?;
    let svc = MediaService::new(engine, internal.join("renditions"), max, limit)?;
    println!(
        "  encoder     {} (max {max} live transcodes)",
        svc.encoder().element_name()
    );
    Ok(Some(Arc::new(svc)))
}

fn print_banner(
    endpoint: &str,
    region: &str,
    c: &credentials::Credentials,
    generated: bool,
    internal: &std::path::Path,
) {
    let origin = if generated {
        format!(
            "generated now and kept in {}",
            internal.join("credentials").display()
        )
    } else {
        "as configured".to_owned()
    };
    println!("Nebula gateway listening on {endpoint}");
    println!("  region      {region}");
    println!("  access key  {}", c.access_key);
    println!("  secret key  {}  ({origin})", c.secret_key);
    println!();
    println!(
        "  aws:    AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {endpoint} s3 ls",
        c.access_key, c.secret_key
    );
    println!(
        "  rclone: rclone lsd ':s3,provider=Other,endpoint={endpoint},access_key_id={},secret_access_key={}:'",
        c.access_key, c.secret_key
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
