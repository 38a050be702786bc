//! The Prometheus metrics text: `GET /_nebula/v1/metrics` on the main listener (signed, like
//! every API call but ping), and `GET /metrics` on the unauthenticated `--metrics-listen`
//! listener for Prometheus, which cannot sign its scrapes with SigV4.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::ApiState;
use crate::metrics::{self, DiskSpace, Gauges, JobDepth, MediaProduced};
use std::sync::atomic::Ordering;

/// How long a job count is reused: the count is a catalog query over the whole queue, and
/// scrapes from several Prometheus servers should not each run it.
const JOBS_TTL: Duration = Duration::from_secs(5);
/// A catalog that does not answer within this leaves the job gauges as they were.
const JOBS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scraper may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

static JOBS_CACHE: Mutex<Option<(Instant, JobDepth)>> = Mutex::new(None);

async fn job_depth(state: &ApiState) -> Option<JobDepth> {
    let jobs = state.jobs.as_ref()?;
    if let Some((at, depth)) = *JOBS_CACHE.lock().unwrap_or_else(|e| e.into_inner())
        && at.elapsed() < JOBS_TTL
    {
        return Some(depth);
    }
    let c = tokio::time::timeout(JOBS_TIMEOUT, jobs.counts())
        .await
        .ok()?
        .ok()?;
    let depth = JobDepth {
        pending: c.pending,
        processing: c.processing,
        completed: c.completed,
        failed: c.failed,
        cancelled: c.cancelled,
    };
    *JOBS_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), depth));
    Some(depth)
}

/// The metrics text, with the gauges sampled now.
pub async fn text(state: &ApiState) -> String {
    let store = state.store.clone();
    let disk = tokio::task::spawn_blocking(move || {
        let (disk, bucket_disks) = super::health::disks(&store);
        let refused = disk.iter().chain(&bucket_disks).any(|d| d.writes_refused);
        disk.map(|d| DiskSpace {
            total: d.total_bytes,
            free: d.free_bytes,
            available: d.available_bytes,
            min_free: d.min_free_bytes,
            writes_refused: refused,
        })
    })
    .await
    .ok()
    .flatten();
    let gauges = Gauges {
        media_pipelines: Some(
            state
                .media
                .as_ref()
                .map_or(0, |m| m.engine().active_pipelines() as u64),
        ),
        transcode_slots: Some(
            state
                .media
                .as_ref()
                .map_or(0, |m| m.max_transcodes() as u64),
        ),
        encoders_started: state
            .media
            .as_ref()
            .map(|_| nebula_media::MediaEngine::encoders_started() as u64),
        jobs: job_depth(state).await,
        disk,
        produced: state.media.as_ref().map(|m| {
            let p = m.produced();
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            MediaProduced {
                live_transcodes: get(&p.live_transcodes),
                posters: get(&p.posters),
                hls_runs: get(&p.hls_runs),
                waited_elsewhere: get(&p.waited_elsewhere),
            }
        }),
    };
    metrics::global().render(&gauges)
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

async fn answer<B>(req: Request<B>, state: ApiState) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "this listener serves only GET /metrics\n".to_owned(),
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        );
    }
    plain(StatusCode::OK, metrics::CONTENT_TYPE, text(&state).await)
}

/// Serves `GET /metrics` without authentication on `listener` (`--metrics-listen`) until the
/// task is dropped. Plain HTTP/1.1: this is for a Prometheus server on a trusted network.
pub async fn serve_listener(listener: TcpListener, state: ApiState) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req, state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}
