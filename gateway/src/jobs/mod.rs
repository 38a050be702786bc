//! Background transcode jobs: a queue in the catalog database and a worker pool in the gateway.
//!
//! The database is the queue, so several gateways sharing one PostgreSQL share the work: a
//! worker takes a pending job atomically (`FOR UPDATE SKIP LOCKED` on PostgreSQL, a guarded
//! `UPDATE … RETURNING` on SQLite), holds it with a lease it renews while the pipeline runs,
//! and a job whose gateway died (lease expired) goes back to pending for another try. A
//! finished job installs its file as the rendition `?quality=` serves (through
//! [`nebula_media::MediaService::produce`]), so the first viewer gets byte ranges instead of
//! a live transcode.

mod auto;
mod queue;
mod worker;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebula_media::{CancelFlag, MediaService, Quality};
use tokio::sync::Notify;

use crate::catalog::{Catalog, CatalogError};
use crate::store::Store;

pub use auto::JobEvents;
pub use queue::{Job, JobCounts, JobFilter, JobStatus};

/// Everything that can go wrong with a job request.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database is down, locked, or answered with an error.
    #[error("catalog database unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// Another catalog problem.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog has no such object.
    #[error("no object '{key}' in bucket '{bucket}' (the catalog does not know it)")]
    NoSuchKey {
        /// Bucket asked for.
        bucket: String,
        /// Key asked for.
        key: String,
    },
    /// The object is not a video by content type or extension.
    #[error(
        "'{key}' is not a video (content type {content_type}): only video objects can be transcoded"
    )]
    NotVideo {
        /// Key asked for.
        key: String,
        /// Its content type, or `unknown`.
        content_type: String,
    },
}

/// Result of job calls.
pub type JobResult<T> = Result<T, JobError>;

/// Settings of the job system (from the command line).
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Workers in this gateway; 0 only queues (another gateway does the work).
    pub workers: usize,
    /// How long a worker holds a job without renewing before others may take it over.
    pub lease: Duration,
    /// Tries per job (a lost worker or a pipeline error counts) before it fails for good.
    pub max_attempts: u32,
    /// Qualities queued for every video written (empty: off).
    pub auto_qualities: Vec<Quality>,
    /// Queue a browser-friendly H.264 rendition for sources browsers cannot play.
    pub auto_web_friendly: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 1,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            auto_qualities: Vec::new(),
            auto_web_friendly: false,
        }
    }
}

/// Parses `--auto-transcode` (`480,720`; empty or `off` for none).
pub fn parse_qualities(s: &str) -> Result<Vec<Quality>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let q = Quality::from_str(part).map_err(|e| e.to_string())?;
        if !out.contains(&q) {
            out.push(q);
        }
    }
    Ok(out)
}

/// The job system of one gateway: queue access for the API, and the worker pool. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

/// A job running in this process.
#[derive(Debug, Clone)]
struct Running {
    cancel: CancelFlag,
    worker: String,
}

#[derive(Debug)]
struct Inner {
    catalog: Catalog,
    store: Arc<Store>,
    media: Option<Arc<MediaService>>,
    config: JobsConfig,
    /// Cancel flags of the jobs this process is running, so a cancel through this gateway
    /// stops the pipeline at once (others notice at their next lease renewal).
    running: Mutex<HashMap<i64, Running>>,
    /// Wakes idle workers when a job is queued here.
    wakeup: Notify,
    /// Set when the gateway stops: no new jobs are taken.
    stopping: AtomicBool,
    /// `hostname:pid`, the first part of every worker id.
    worker_prefix: String,
}

impl Jobs {
    /// The job system over the catalog's database. Call [`Jobs::start`] to run workers.
    pub fn new(
        catalog: Catalog,
        store: Arc<Store>,
        media: Option<Arc<MediaService>>,
        config: JobsConfig,
    ) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        Jobs {
            inner: Arc::new(Inner {
                catalog,
                store,
                media,
                config,
                running: Mutex::new(HashMap::new()),
                wakeup: Notify::new(),
                stopping: AtomicBool::new(false),
                worker_prefix: format!("{host}:{}", std::process::id()),
            }),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }

    /// Starts the worker pool (nothing without the media extension: jobs then wait for a
    /// gateway that can transcode).
    pub fn start(&self) {
        if self.inner.media.is_none() {
            if self.inner.config.workers > 0 {
                tracing::warn!(
                    "transcode workers not started: media extensions are disabled on this machine"
                );
            }
            return;
        }
        for n in 1..=self.inner.config.workers {
            let jobs = self.clone();
            let id = format!("{}:{n}", self.inner.worker_prefix);
            tokio::spawn(async move { jobs.worker_loop(id).await });
        }
        tracing::info!(
            workers = self.inner.config.workers,
            lease_secs = self.inner.config.lease.as_secs(),
            "transcode workers started"
        );
    }

    /// Queues one job per quality for `bucket/key`; an active job for the same object and
    /// quality is returned instead of a new one.
    pub async fn enqueue(
        &self,
        bucket: &str,
        key: &str,
        qualities: &[Quality],
    ) -> JobResult<Vec<Job>> {
        let obj = self
            .inner
            .catalog
            .get_object(bucket, key)
            .await?
            .ok_or_else(|| JobError::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })?;
        if key.ends_with('/') || !nebula_media::detect::is_video(key, obj.content_type.as_deref()) {
            return Err(JobError::NotVideo {
                key: key.to_owned(),
                content_type: obj.content_type.unwrap_or_else(|| "unknown".to_owned()),
            });
        }
        let mut out = Vec::with_capacity(qualities.len());
        for q in qualities {
            out.push(queue::insert(self.db(), obj.id, *q).await?);
        }
        self.inner.wakeup.notify_waiters();
        Ok(out)
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> JobResult<Vec<Job>> {
        Ok(queue::list(self.db(), filter).await?)
    }

    /// One job.
    pub async fn get(&self, id: i64) -> JobResult<Option<Job>> {
        Ok(queue::get(self.db(), id).await?)
    }

    /// Cancels a pending or processing job (a finished one is returned unchanged). A pipeline
    /// running in this process stops at once; one in another gateway at its next lease renewal.
    pub async fn cancel(&self, id: i64) -> JobResult<Option<Job>> {
        let cancelled = queue::cancel(self.db(), id).await?;
        if cancelled && let Some(r) = self.inner.running.lock().expect("running lock").get(&id) {
            r.cancel.cancel();
        }
        Ok(queue::get(self.db(), id).await?)
    }

    /// How many jobs are in each state.
    pub async fn counts(&self) -> JobResult<JobCounts> {
        Ok(queue::counts(self.db()).await?)
    }

    /// Stops taking jobs and hands the running ones back to the queue (pending, attempt not
    /// counted), so a restart or another gateway finishes them; waits briefly for the
    /// pipelines to stop so the process can exit.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wakeup.notify_waiters();
        let running: Vec<(i64, Running)> = self
            .inner
            .running
            .lock()
            .expect("running lock")
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        for (id, r) in running {
            if let Err(e) = queue::release(self.db(), id, &r.worker).await {
                tracing::warn!(job = id, error = %e, "cannot hand the job back to the queue; its lease will expire");
            }
            r.cancel.cancel();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !self.inner.running.lock().expect("running lock").is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn db(&self) -> &crate::catalog::Db {
        self.inner.catalog.db()
    }
}
