//! Prometheus metrics of the gateway process.
//!
//! Counters and histograms are bumped where things happen (the request entry point, the caches,
//! the catalog) and cost an atomic add each: no lock is taken on the request path except the
//! read lock of a labelled family's lookup, once per request. Gauges that describe state (media
//! pipelines, the job queue, disk space) are filled in when the metrics are scraped, by the
//! caller of [`Metrics::render`].
//!
//! This module is a leaf: the rest of the gateway calls into it, it calls nothing of the
//! gateway, so any module may report here without an import cycle.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The operation label of a request s3s refused before it knew the operation (a bad signature,
/// a malformed path, a method S3 does not have) or that failed before reaching s3s.
pub const UNKNOWN_OP: &str = "Unknown";

/// Latency buckets in seconds: from a cached small GET (a fraction of a millisecond) to a
/// large multipart completion or a transcode's first bytes.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Catalog calls are database round trips: sub-millisecond on SQLite, more on a remote server.
const CATALOG_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// The caches whose hits and misses are counted.
#[derive(Debug, Clone, Copy)]
pub enum Cache {
    /// Object metadata by file version (saves an xattr read per GET, HEAD or listed key).
    Metadata,
    /// Sorted listings of big folders (saves reading and sorting the folder per listing page).
    Listing,
    /// Finished renditions (a hit serves a file; a miss starts a live transcode).
    Rendition,
}

/// What a catalog call did, for its latency histogram.
#[derive(Debug, Clone, Copy)]
pub enum CatalogOp {
    /// A request waiting for its write to be committed (group commit included).
    Write,
    /// A lookup or listing of object rows.
    Read,
}

impl CatalogOp {
    fn label(self) -> &'static str {
        match self {
            CatalogOp::Write => "write",
            CatalogOp::Read => "read",
        }
    }
}

/// Jobs in the queue by status, as the catalog counts them.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobDepth {
    /// Waiting for a worker.
    pub pending: u64,
    /// Held by a worker.
    pub processing: u64,
    /// Finished with a rendition.
    pub completed: u64,
    /// Given up.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// Space on the filesystem of the data folder.
#[derive(Debug, Clone, Copy)]
pub struct DiskSpace {
    /// Size of the filesystem.
    pub total: u64,
    /// Free, including blocks reserved for root.
    pub free: u64,
    /// Free for the gateway's user.
    pub available: u64,
    /// The reserve writes leave free there (`--min-free`; 0 when off).
    pub min_free: u64,
    /// Writes are refused now, there or on a bucket's own disk, for lack of free space.
    pub writes_refused: bool,
}

/// Media work this process did since its start, as the media service counts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaProduced {
    /// Live transcodes started.
    pub live_transcodes: u64,
    /// Posters taken.
    pub posters: u64,
    /// HLS segment runs started.
    pub hls_runs: u64,
    /// Requests that waited for another gateway's rendition, poster or segment.
    pub waited_elsewhere: u64,
}

/// State sampled at scrape time; `None` leaves the gauge at its last value (0 at first).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Media pipelines running now: live transcodes and background jobs.
    pub media_pipelines: Option<u64>,
    /// The most live transcodes at once (`--max-transcodes`).
    pub transcode_slots: Option<u64>,
    /// H.264 encoders started since the process started.
    pub encoders_started: Option<u64>,
    /// The job queue (all gateways sharing the database).
    pub jobs: Option<JobDepth>,
    /// The data folder's filesystem.
    pub disk: Option<DiskSpace>,
    /// Media work done (counters, sampled from the media service).
    pub produced: Option<MediaProduced>,
}

/// Hit and miss counters of one cache, resolved once so a lookup costs one atomic add.
struct CacheCounters {
    hit: IntCounter,
    miss: IntCounter,
}

/// Every metric of the process, in one registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    in_flight: IntGauge,
    connections: IntGauge,
    metadata: CacheCounters,
    listing: CacheCounters,
    rendition: CacheCounters,
    catalog: HistogramVec,
    pipelines: IntGauge,
    transcode_slots: IntGauge,
    produced: IntCounterVec,
    waited_elsewhere: IntCounter,
    encoders_started: IntCounter,
    jobs: IntGaugeVec,
    disk_total: IntGauge,
    disk_free: IntGauge,
    disk_available: IntGauge,
    disk_min_free: IntGauge,
    writes_refused: IntGauge,
    remote_changes: IntCounter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Counts a cache lookup.
pub fn cache(which: Cache, hit: bool) {
    let m = global();
    let c = match which {
        Cache::Metadata => &m.metadata,
        Cache::Listing => &m.listing,
        Cache::Rendition => &m.rendition,
    };
    let counter = if hit { &c.hit } else { &c.miss };
    counter.inc();
}

/// Counts object changes announced by other gateways.
pub fn remote_changes(n: usize) {
    global().remote_changes.inc_by(n as u64);
}

/// Times a catalog call until the guard is dropped.
pub fn catalog_timer(op: CatalogOp) -> CatalogTimer {
    CatalogTimer {
        op,
        started: Instant::now(),
    }
}

/// Records a catalog call's latency when dropped (see [`catalog_timer`]).
#[must_use = "the call is timed until the guard is dropped"]
pub struct CatalogTimer {
    op: CatalogOp,
    started: Instant,
}

impl Drop for CatalogTimer {
    fn drop(&mut self) {
        global()
            .catalog
            .with_label_values(&[self.op.label()])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Counts an open connection until dropped.
pub fn connection() -> ConnectionGuard {
    global().connections.inc();
    ConnectionGuard(())
}

/// Keeps a connection counted in `nebula_active_connections` (see [`connection`]).
#[must_use = "the connection is counted until the guard is dropped"]
pub struct ConnectionGuard(());

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        global().connections.dec();
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique name");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique name");
    g
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique name");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let caches = counter_vec(
            &r,
            "nebula_cache_lookups_total",
            "Cache lookups by cache (metadata, listing, rendition) and result (hit, miss).",
            &["cache", "result"],
        );
        let pair = |name: &str| CacheCounters {
            hit: caches.with_label_values(&[name, "hit"]),
            miss: caches.with_label_values(&[name, "miss"]),
        };
        let (metadata, listing, rendition) = (pair("metadata"), pair("listing"), pair("rendition"));
        let build = IntGaugeVec::new(
            Opts::new(
                "nebula_build_info",
                "Always 1; the version label is the gateway's.",
            ),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build.clone())).expect("unique name");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let jobs = IntGaugeVec::new(
            Opts::new(
                "nebula_jobs",
                "Transcode jobs in the queue by status (the whole queue, every gateway sharing the database).",
            ),
            &["status"],
        )
        .expect("valid metric");
        r.register(Box::new(jobs.clone())).expect("unique name");
        Metrics {
            requests: counter_vec(
                &r,
                "nebula_requests_total",
                "Requests answered, by operation and HTTP status.",
                &["op", "status"],
            ),
            duration: histogram_vec(
                &r,
                "nebula_request_duration_seconds",
                "Time from a request's arrival until its response head is ready, by operation.",
                &["op"],
                LATENCY_BUCKETS,
            ),
            received: counter_vec(
                &r,
                "nebula_received_bytes_total",
                "Request body bytes received, by operation.",
                &["op"],
            ),
            sent: counter_vec(
                &r,
                "nebula_sent_bytes_total",
                "Response body bytes sent, by operation.",
                &["op"],
            ),
            in_flight: gauge(
                &r,
                "nebula_requests_in_flight",
                "Requests being handled now (until their response head is ready).",
            ),
            connections: gauge(
                &r,
                "nebula_active_connections",
                "Client connections open now (all listeners).",
            ),
            metadata,
            listing,
            rendition,
            remote_changes: {
                let c = IntCounter::new(
                    "nebula_remote_changes_total",
                    "Object changes other gateways announced through the database (each drops what the memory caches hold of the object).",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique name");
                c
            },
            catalog: histogram_vec(
                &r,
                "nebula_catalog_duration_seconds",
                "Catalog database calls: write (a request waiting for its change to commit) and read.",
                &["op"],
                CATALOG_BUCKETS,
            ),
            pipelines: gauge(
                &r,
                "nebula_media_pipelines",
                "GStreamer pipelines running now: live transcodes and background jobs.",
            ),
            transcode_slots: gauge(
                &r,
                "nebula_media_transcode_slots",
                "The most live transcodes at once (--max-transcodes); 0 without media extensions.",
            ),
            produced: counter_vec(
                &r,
                "nebula_media_produced_total",
                "Media pipelines this gateway started, by kind: live_transcode, poster, hls_run. With gateways sharing a PostgreSQL catalog, one of them produces each rendition, poster or segment.",
                &["kind"],
            ),
            waited_elsewhere: {
                let c = IntCounter::new(
                    "nebula_media_waited_for_other_gateway_total",
                    "Media requests that found their rendition, poster or HLS segment being produced by another gateway and waited for its file.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique name");
                c
            },
            encoders_started: {
                let c = IntCounter::new(
                    "nebula_media_encoders_started_total",
                    "H.264 encoders put into pipelines (live transcodes, HLS runs, jobs); stream-copied HLS segments start none.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique name");
                c
            },
            jobs,
            disk_total: gauge(
                &r,
                "nebula_data_disk_total_bytes",
                "Size of the data folder's filesystem.",
            ),
            disk_free: gauge(
                &r,
                "nebula_data_disk_free_bytes",
                "Free bytes on the data folder's filesystem (including root's reserve).",
            ),
            disk_available: gauge(
                &r,
                "nebula_data_disk_available_bytes",
                "Bytes the gateway can still write on the data folder's filesystem.",
            ),
            disk_min_free: gauge(
                &r,
                "nebula_data_disk_min_free_bytes",
                "The reserve writes leave free on the data folder's filesystem (--min-free; 0 when off).",
            ),
            writes_refused: gauge(
                &r,
                "nebula_writes_refused",
                "1 while writes are refused (507 InsufficientStorage) because the data folder's filesystem or a bucket's disk has less free space than --min-free.",
            ),
            registry: r,
        }
    }

    /// The metrics in Prometheus's text exposition format, with `gauges` sampled now.
    pub fn render(&self, gauges: &Gauges) -> String {
        let set = |g: &IntGauge, v: Option<u64>| {
            if let Some(v) = v {
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        };
        set(&self.pipelines, gauges.media_pipelines);
        set(&self.transcode_slots, gauges.transcode_slots);
        if let Some(p) = gauges.produced {
            // The media service counts; the counters follow it here.
            let follow = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
            for (kind, n) in [
                ("live_transcode", p.live_transcodes),
                ("poster", p.posters),
                ("hls_run", p.hls_runs),
            ] {
                follow(&self.produced.with_label_values(&[kind]), n);
            }
            follow(&self.waited_elsewhere, p.waited_elsewhere);
        }
        if let Some(n) = gauges.encoders_started {
            // The media crate counts; the counter catches up with it.
            self.encoders_started
                .inc_by(n.saturating_sub(self.encoders_started.get()));
        }
        if let Some(j) = gauges.jobs {
            for (status, n) in [
                ("pending", j.pending),
                ("processing", j.processing),
                ("completed", j.completed),
                ("failed", j.failed),
                ("cancelled", j.cancelled),
            ] {
                set(&self.jobs.with_label_values(&[status]), Some(n));
            }
        }
        if let Some(d) = gauges.disk {
            set(&self.disk_total, Some(d.total));
            set(&self.disk_free, Some(d.free));
            set(&self.disk_available, Some(d.available));
            set(&self.disk_min_free, Some(d.min_free));
            set(&self.writes_refused, Some(u64::from(d.writes_refused)));
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The operation of a request to the gateway's own routes, known from the path alone: the
/// JSON API by endpoint and the web app. `None` for S3 requests (s3s names those).
fn own_route_op(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/_nebula")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let Some(api) = rest.strip_prefix("/v1/") else {
        return Some(if rest.starts_with("/ui") {
            "WebApp"
        } else {
            "ApiOther"
        });
    };
    // A fixed set of names keeps the label's values (and the series) bounded.
    Some(match api.split('/').next().unwrap_or("") {
        "ping" => "ApiPing",
        "health" => "ApiHealth",
        "files" => "ApiFiles",
        "transcode" => "ApiTranscode",
        "jobs" => "ApiJobs",
        "logs" => "ApiLogs",
        "metrics" => "ApiMetrics",
        _ => "ApiOther",
    })
}

/// True for the query of a media-extension GET (`?quality=`, `?transcode=`, `?stream=`).
fn is_media_query(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        matches!(name, "quality" | "transcode" | "stream")
    })
}

/// One request's accounting, from its arrival in the front layer to its response head. It
/// travels into s3s as a request extension so the access check can name the operation.
#[derive(Clone)]
pub struct RequestTag(Arc<TagInner>);

struct TagInner {
    op: OnceLock<&'static str>,
    /// A GET/HEAD of the media extension: counted as `MediaTranscode`, not `GetObject`.
    media: bool,
    received: AtomicU64,
    started: Instant,
}

impl RequestTag {
    /// Starts accounting for a request to `path` with `query`.
    pub fn start(path: &str, query: Option<&str>) -> Self {
        global().in_flight.inc();
        let op = OnceLock::new();
        if let Some(name) = own_route_op(path) {
            let _ = op.set(name);
        }
        RequestTag(Arc::new(TagInner {
            op,
            media: query.is_some_and(is_media_query),
            received: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    /// Names the request's operation (the first name given wins).
    pub fn set_op(&self, op: &'static str) {
        let _ = self.0.op.set(op);
    }

    /// The operation as counted: s3s's name, the API endpoint, or [`UNKNOWN_OP`].
    pub fn op(&self) -> &'static str {
        match self.0.op.get().copied() {
            Some("GetObject") if self.0.media => "MediaTranscode",
            Some(op) => op,
            None => UNKNOWN_OP,
        }
    }

    /// Counts the bytes of a request body as they are read.
    pub fn count_received<B>(&self, body: B) -> CountReceived<B> {
        CountReceived {
            inner: body,
            tag: self.clone(),
        }
    }

    /// Records the request with the status of its response head, and counts the bytes of the
    /// response body as they are sent.
    pub fn finish<B>(self, status: http::StatusCode, body: B) -> CountSent<B> {
        let m = global();
        m.in_flight.dec();
        let op = self.op();
        m.requests.with_label_values(&[op, status.as_str()]).inc();
        m.duration
            .with_label_values(&[op])
            .observe(self.0.started.elapsed().as_secs_f64());
        let received = self.0.received.load(Ordering::Relaxed);
        if received > 0 {
            m.received.with_label_values(&[op]).inc_by(received);
        }
        CountSent {
            inner: body,
            sent: m.sent.with_label_values(&[op]),
        }
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.0.started.elapsed()
    }
}

/// Names the operation of the request carrying a [`RequestTag`] in `ext` (from s3s's access
/// check, which is the first place the S3 operation is known).
pub fn note_op(ext: &http::Extensions, op: &'static str) {
    if let Some(tag) = ext.get::<RequestTag>() {
        tag.set_op(op);
    }
}

/// The one `'static` copy of an operation name. s3s lends its names only for the access
/// check; they come from its fixed set of operations, so keeping each one costs a few bytes
/// once.
pub fn op_name(name: &str) -> &'static str {
    static NAMES: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
    if let Some(n) = NAMES.read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return n;
    }
    let mut names = NAMES.write().unwrap_or_else(|e| e.into_inner());
    match names.get(name) {
        Some(n) => n,
        None => {
            let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.insert(n);
            n
        }
    }
}

/// A request body that counts its bytes into its [`RequestTag`].
pub struct CountReceived<B> {
    inner: B,
    tag: RequestTag,
}

impl<B> Body for CountReceived<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.tag
                .0
                .received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts the bytes it hands to the connection.
pub struct CountSent<B> {
    inner: B,
    sent: IntCounter,
}

impl<B> Body for CountSent<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.sent.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_routes_have_bounded_names() {
        assert_eq!(own_route_op("/_nebula/v1/logs"), Some("ApiLogs"));
        assert_eq!(own_route_op("/_nebula/v1/jobs/12/cancel"), Some("ApiJobs"));
        assert_eq!(own_route_op("/_nebula/v1/whatever"), Some("ApiOther"));
        assert_eq!(own_route_op("/_nebula/ui/index.html"), Some("WebApp"));
        assert_eq!(own_route_op("/_nebula"), Some("ApiOther"));
        assert_eq!(own_route_op("/_nebulax/key"), None);
        assert_eq!(own_route_op("/bucket/_nebula/v1/logs"), None);
    }

    #[test]
    fn media_queries() {
        assert!(is_media_query("quality=720"));
        assert!(is_media_query("X-Amz-Date=1&transcode=h264"));
        assert!(!is_media_query("qualityx=1&partNumber=2"));
        assert!(!is_media_query(""));
    }

    #[test]
    fn a_request_is_counted_under_its_operation_and_status() {
        let before = global()
            .requests
            .with_label_values(&["MediaTranscode", "206"])
            .get();
        let tag = RequestTag::start("/b/movie.mp4", Some("quality=480"));
        let mut ext = http::Extensions::new();
        ext.insert(tag.clone());
        note_op(&ext, "GetObject");
        note_op(&ext, "PutObject");
        let _ = tag.finish(http::StatusCode::PARTIAL_CONTENT, ());
        let after = global()
            .requests
            .with_label_values(&["MediaTranscode", "206"])
            .get();
        assert_eq!(after, before + 1);
        let text = global().render(&Gauges::default());
        assert!(text.contains("nebula_requests_total{op=\"MediaTranscode\",status=\"206\"}"));
        assert!(text.contains("# TYPE nebula_request_duration_seconds histogram"));
    }
}
