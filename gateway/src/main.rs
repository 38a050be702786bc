//! `nebula-gateway`: the server binary.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nebula_gateway::access::{Access, KeyStore};
use nebula_gateway::catalog::Catalog;
use nebula_gateway::config::{Cli, Command, ReindexArgs, ServeArgs, parse_size};
use nebula_gateway::events::ObjectEvents;
use nebula_gateway::limits::Limits;
use nebula_gateway::{
    build_front, credentials, jobs, listen, logs, peer, s3, server, store, tailnet,
};
use nebula_media::MediaService;

fn main() -> anyhow::Result<()> {
    nebula_gateway::store::sys::keep_freed_blocks();
    // One filter for both outputs: stderr, and the ring `GET /_nebula/v1/logs` reads.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,s3s::ops=off".into()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(logs::layer())
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Serve(a)) => runtime.block_on(serve(a)),
        Some(Command::Reindex(a)) => runtime.block_on(reindex(a)),
        Some(Command::Keys(a)) => runtime.block_on(nebula_gateway::access::command::run(a)),
        None => runtime.block_on(serve(cli.serve)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auto_qualities = jobs::parse_qualities(&args.auto_transcode)
        .map_err(|e| anyhow::anyhow!("--auto-transcode: {e}"))?;
    let listen = listen::ListenSpec::parse(&args.listen)?;
    let tailnet_allow = peer::AllowList::parse(&args.tailnet.tailscale_allow)?;
    if args.tailnet.tailscale && !tailnet::SUPPORTED {
        return Err(tailnet::TailnetError::NotCompiledIn.into());
    }
    if listen == listen::ListenSpec::None && !args.tailnet.tailscale {
        anyhow::bail!(
            "--listen none leaves no way in: it is only valid with --tailscale (serve on the tailnet only)"
        );
    }
    if tailnet_allow.is_some() && !args.tailnet.tailscale {
        anyhow::bail!(
            "--tailscale-allow needs --tailscale: only the in-process tailnet listener knows the peer's node (behind a tailscaled, use the tailnet's ACLs)"
        );
    }
    let store = store::Store::open(&args.data_dir)
        .with_context(|| format!("opening data folder {}", args.data_dir.display()))?
        .with_min_free(args.min_free);
    let (creds, generated) = credentials::resolve(
        args.access_key.clone(),
        args.secret_key.clone(),
        store.internal_dir(),
    )?;
    keep_secrets_out_of_logs(&args, &creds.secret_key);
    let limits = Limits {
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        body_idle_timeout: Duration::from_secs(args.body_timeout_secs),
    };
    let tls = load_tls(&args, limits.header_read_timeout)?;
    let listeners = listen::bind_all(&listen).await?;
    let metrics_listeners = match &args.metrics_listen {
        Some(spec) => listen::bind_all(&listen::ListenSpec::parse(spec)?)
            .await
            .with_context(|| format!("--metrics-listen {spec}"))?,
        None => Vec::new(),
    };
    let mut endpoints = Vec::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    for l in &listeners {
        endpoints.push(format!("{scheme}://{}", l.local_addr()?));
    }
    refuse_weak_secret_when_exposed(&listeners, args.tailnet.tailscale, &creds.secret_key)?;
    let tailnet_cfg = tailnet_config(
        &args,
        &listen,
        tailnet_allow.is_some(),
        store.internal_dir(),
    );
    // With no local listener the tailnet is the only way in: failing to join is fatal then.
    let required = args.tailnet.tailscale_required || listen == listen::ListenSpec::None;
    let joined = match &tailnet_cfg {
        Some(cfg) if required => {
            let node = tailnet::join(cfg).await.context("--tailscale (required)")?;
            endpoints.push(format!("http://{}", node.local_addr()));
            Some(node)
        }
        _ => None,
    };
    tracing::info!(data_dir = %store.root().display(), metadata = ?store.meta_store(), min_free = %args.min_free, host_id = nebula_gateway::front::host_id(), "data folder ready");
    print_banner(
        &endpoints,
        &args.region,
        &creds,
        generated,
        store.internal_dir(),
    );
    match (&tailnet_cfg, &joined) {
        (_, Some(node)) => println!("  tailnet     joined as {}", node.name()),
        (Some(cfg), None) => println!(
            "  tailnet     joining as {} (up to {} s; the local listener serves meanwhile)",
            cfg.hostname,
            cfg.timeout.as_secs()
        ),
        (None, None) => {}
    }
    let store = Arc::new(store);
    let catalog = Catalog::start(args.database_url.as_deref(), store.clone())
        .await
        .context("opening the catalog")?;
    // Gateways sharing a PostgreSQL catalog share the data folder too: one of them at a time
    // produces a rendition, poster or HLS segment, the others serve its file.
    let claims = (catalog.engine() == "postgres").then(|| {
        Arc::new(nebula_gateway::catalog::MediaLeases::new(
            catalog.clone(),
            tokio::runtime::Handle::current(),
        )) as Arc<dyn nebula_media::Claims>
    });
    let media = start_media(&args, store.internal_dir(), claims).await?;
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
    if let Some(svc) = &media {
        gateway.events.push(svc.clone() as Arc<dyn ObjectEvents>);
    }
    gateway.events.push(Arc::new(catalog.clone()));
    // The auto-transcode rules see every write right after the catalog recorded it.
    if auto {
        gateway
            .events
            .push(Arc::new(jobs::JobEvents::new(jobs.clone())));
    }
    // What other gateways sharing the database change is dropped from this one's caches.
    let mut caches: Vec<Arc<dyn nebula_gateway::events::ChangedElsewhere>> =
        vec![gateway.store.clone()];
    if let Some(svc) = &media {
        caches.push(svc.clone());
    }
    catalog.start_change_listener(caches);
    gateway.media = media;
    gateway.lifecycle_day = std::time::Duration::from_secs(args.lifecycle_day_seconds);
    let sweeper = tokio::spawn(nebula_gateway::lifecycle::run(
        gateway.store.clone(),
        catalog.clone(),
        gateway.events.clone(),
        gateway.lifecycle_day,
    ));
    let public_buckets: Vec<String> = args
        .public_buckets
        .iter()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    if !public_buckets.is_empty() {
        println!("  public-read {}", public_buckets.join(", "));
    }
    // Gateways sharing a PostgreSQL catalog share its keys; otherwise they live in the folder.
    let keys = if catalog.engine() == "postgres" {
        KeyStore::in_catalog(catalog.clone())
    } else {
        KeyStore::in_folder(gateway.store.internal_dir())
    };
    println!(
        "  scoped keys in {} (`nebula-gateway keys --help`)",
        keys.describe()
    );
    let access = Access::new(&creds.access_key, &creds.secret_key, keys, public_buckets);
    let mut catalog = catalog;
    let heartbeat = catalog.start_heartbeat(
        advertised(&args.advertise_url, &endpoints),
        Duration::from_secs(args.heartbeat_secs),
    );
    let api = nebula_gateway::api::ApiState {
        started: std::time::Instant::now(),
        store: gateway.store.clone(),
        media: gateway.media.clone(),
        catalog: Some(catalog),
        jobs: Some(jobs.clone()),
        access: Arc::new(access),
    };
    let mut metrics_tasks = Vec::new();
    for l in metrics_listeners {
        println!(
            "  metrics     http://{}/metrics (Prometheus, no authentication)",
            l.local_addr()?
        );
        let task = nebula_gateway::api::metrics::serve_listener(l, api.clone());
        metrics_tasks.push(tokio::spawn(task));
    }
    let front = build_front(gateway, api, args.domain.as_deref());
    let front = front.with_tailnet_allow(tailnet_allow).with_limits(limits);
    serve_all(listeners, tls, tailnet_cfg.map(|cfg| (cfg, joined)), front).await;
    for t in metrics_tasks {
        t.abort();
    }
    sweeper.abort();
    // Running jobs go back to the queue instead of holding the exit until they finish.
    jobs.shutdown().await;
    heartbeat.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// The URLs this gateway reports in the catalog: `--advertise-url`, else its listeners'
/// (an unspecified address, which other hosts cannot use, shows the host name instead).
fn advertised(configured: &[String], endpoints: &[String]) -> Vec<String> {
    let configured: Vec<String> = configured
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if !configured.is_empty() {
        return configured;
    }
    let host = nebula_gateway::catalog::gateway_id()
        .rsplit_once(':')
        .map_or("localhost", |(h, _)| h)
        .to_owned();
    endpoints
        .iter()
        .map(|e| e.replace("0.0.0.0", &host).replace("[::]", &host))
        .collect()
}

/// The secret key, the database password and the tailnet auth key never appear in the log
/// lines the gateway serves (`GET /_nebula/v1/logs`), whatever a message quotes.
fn keep_secrets_out_of_logs(args: &ServeArgs, secret_key: &str) {
    let ring = logs::ring();
    ring.add_secret(secret_key);
    if let Some(password) = args.database_url.as_deref().and_then(logs::url_password) {
        ring.add_secret(password);
    }
    if let Some(k) = &args.tailnet.ts_authkey {
        ring.add_secret(k);
    }
    if let Ok(k) = std::env::var("TS_AUTH_KEY") {
        ring.add_secret(&k);
    }
}

/// `--tls-cert` / `--tls-key`, both or neither.
fn load_tls(
    args: &ServeArgs,
    handshake_timeout: Duration,
) -> anyhow::Result<Option<nebula_gateway::tls::Tls>> {
    match (&args.tls_cert, &args.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(
            nebula_gateway::tls::Tls::load(cert, key, handshake_timeout)
                .context("--tls-cert/--tls-key")?,
        )),
        _ => anyhow::bail!("give both --tls-cert and --tls-key (PEM files), or neither"),
    }
}

/// Refuses to serve other hosts (a non-loopback listener, or the tailnet) with an empty,
/// short or sample secret: such a key is the first thing anyone scanning for S3 tries.
fn refuse_weak_secret_when_exposed(
    listeners: &[tokio::net::TcpListener],
    tailnet: bool,
    secret: &str,
) -> anyhow::Result<()> {
    let exposed = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .find(|a| !a.ip().is_loopback())
        .map(|a| format!("listening on {a}"))
        .or(tailnet.then(|| "serving on the tailnet".to_owned()));
    if let (Some(exposed), Some(reason)) = (exposed, credentials::weak_secret(secret)) {
        anyhow::bail!(
            "refusing to start: {reason}, and the gateway would be {exposed}, reachable from other hosts. \
             Set --secret-key / NEBULA_SECRET_KEY to a long random value (e.g. `openssl rand -base64 30`), \
             or give no keys to have a pair generated, or listen on 127.0.0.1 only"
        );
    }
    Ok(())
}

/// The tailnet settings, when `--tailscale` is on.
fn tailnet_config(
    args: &ServeArgs,
    listen: &listen::ListenSpec,
    restricted: bool,
    internal: &std::path::Path,
) -> Option<tailnet::TailnetConfig> {
    let t = &args.tailnet;
    if !t.tailscale {
        return None;
    }
    Some(tailnet::TailnetConfig {
        // Both spellings are in use: TS_AUTHKEY (tailscaled, docs) and TS_AUTH_KEY (tailscale-rs).
        auth_key: t
            .ts_authkey
            .clone()
            .or_else(|| std::env::var("TS_AUTH_KEY").ok())
            .filter(|k| !k.is_empty()),
        hostname: t.ts_hostname.clone(),
        control_url: t.ts_control_url.clone().filter(|u| !u.is_empty()),
        timeout: std::time::Duration::from_secs(t.ts_timeout_secs),
        state_dir: internal.join("tailscale"),
        port: t
            .ts_port
            .or(listen.first_port().filter(|p| *p != 0))
            .unwrap_or(9000),
        restricted,
    })
}

/// Serves `front` on every TCP listener and, with `--tailscale`, on the tailnet (joined in the
/// background unless it was joined at start, so an unreachable control server never holds up
/// the local listener) until SIGINT/SIGTERM; then drains the connections of all of them.
async fn serve_all(
    listeners: Vec<tokio::net::TcpListener>,
    tls: Option<nebula_gateway::tls::Tls>,
    tailnet: Option<(tailnet::TailnetConfig, Option<tailnet::Tailnet>)>,
    front: nebula_gateway::front::Front,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            server::shutdown_signal().await;
            stop.cancel();
        }
    });
    let tcp =
        futures::future::join_all(listeners.into_iter().map(|l| {
            server::accept_tcp(l, tls.clone(), front.clone(), &graceful, stop.cancelled())
        }));
    let tailnet = async {
        let (cfg, joined) = tailnet?;
        let node = match joined {
            Some(node) => node,
            None => tokio::select! {
                joined = tailnet::join(&cfg) => match joined {
                    Ok(node) => {
                        tracing::info!(node = %node.name(), "tailnet: serving on http://{}", node.local_addr());
                        node
                    }
                    Err(e) => {
                        tracing::error!("{e}; serving on the local listener only (--tailscale-required makes this fatal)");
                        return None;
                    }
                },
                () = stop.cancelled() => return None,
            },
        };
        node.accept(front.clone(), &graceful, stop.cancelled())
            .await;
        Some(node)
    };
    let ((), node) = tokio::join!(
        async {
            tcp.await;
        },
        tailnet
    );
    server::drain(graceful).await;
    if let Some(node) = node {
        node.shutdown().await;
    }
    signal.abort();
}

/// `reindex`: finishes versioned writes a crash cut short (so each key's current version is
/// its plain file), then reconciles the catalog with the data folder (rebuilding a lost
/// database) and prints what changed. The catalog follows current versions; kept versions are
/// listed from the folder.
async fn reindex(args: ReindexArgs) -> anyhow::Result<()> {
    let store = store::Store::open_shared(&args.data_dir)
        .with_context(|| format!("opening data folder {}", args.data_dir.display()))?;
    let repaired = store
        .recover_versions()
        .context("repairing object versions")?;
    if repaired > 0 {
        println!("repaired the versions of {repaired} keys");
    }
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
    claims: Option<Arc<dyn nebula_media::Claims>>,
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
    let mut svc = MediaService::new(engine, internal.join("renditions"), max, limit)?;
    if let Some(claims) = claims {
        svc = svc.with_claims(claims);
    }
    println!(
        "  encoder     {} (max {max} live transcodes)",
        svc.encoder().element_name()
    );
    Ok(Some(Arc::new(svc)))
}

fn print_banner(
    endpoints: &[String],
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
    // The first address is the one the client examples use; with `--listen none` and the
    // tailnet not joined yet there is none to show.
    let endpoint = endpoints
        .first()
        .map_or("http://<tailnet address>", String::as_str);
    println!("Nebula gateway listening on {}", endpoints.join(", "));
    println!("  region      {region}");
    println!("  access key  {}", c.access_key);
    println!("  secret key  {}  ({origin})", c.secret_key);
    println!(
        "  web app     {endpoint}{}  (sign in with the keys above)",
        nebula_gateway::ui::UI_PATH
    );
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
