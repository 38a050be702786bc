//! The worker pool: each worker takes one job at a time from the database and runs its
//! pipeline on a blocking thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use nebula_media::{CancelFlag, Installed, MediaError, ObjectRef};

use super::{Job, Jobs, Running, queue};
use crate::catalog::Variant;
use crate::store::StoreError;
use crate::store::keys::parse_key;

/// How often a running job records progress, renews its lease and checks for a cancel made
/// through another gateway; bounds that cancel's latency.
const TICK: Duration = Duration::from_millis(500);

/// How often an idle worker looks for jobs queued by other gateways and for expired leases.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long a worker waits after a database error.
const RETRY: Duration = Duration::from_secs(5);

/// How an attempt ended.
enum Outcome {
    Completed {
        path: String,
        size: u64,
        encoder: String,
    },
    Cancelled,
    /// `retry`: worth another attempt (a pipeline or I/O error), not a bad source.
    Failed {
        error: String,
        retry: bool,
    },
}

impl Jobs {
    pub(super) async fn worker_loop(self, worker: String) {
        let mut waiting_for_space = false;
        loop {
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            // A rendition is written to the data folder's disk: while the free-space reserve
            // refuses writes there, jobs stay queued (a gateway with room may take them).
            match self.room_for_renditions().await {
                Err(e) => {
                    if !waiting_for_space {
                        tracing::warn!("transcode jobs wait for free space: {e}");
                        waiting_for_space = true;
                    }
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
                Ok(()) if waiting_for_space => {
                    tracing::info!("transcode jobs resume: the data folder has room again");
                    waiting_for_space = false;
                }
                Ok(()) => {}
            }
            if let Err(e) = queue::expire_leases(self.db(), self.inner.config.max_attempts).await {
                tracing::warn!(error = %e, "job queue unavailable");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            match queue::claim(self.db(), &worker, self.inner.config.lease).await {
                Ok(Some(job)) => self.run(job, &worker).await,
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, self.inner.wakeup.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "job queue unavailable");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Refuses while the data folder's disk is below the free-space reserve (`--min-free`).
    async fn room_for_renditions(&self) -> Result<(), StoreError> {
        let store = self.inner.store.clone();
        if store.space().admit_cached(None, 0).is_some() {
            return Ok(());
        }
        crate::store::read::blocking(move || store.space().admit(None, 0).map(drop)).await
    }

    /// Runs one attempt of `job` and records how it ended.
    async fn run(&self, job: Job, worker: &str) {
        tracing::info!(job = job.id, bucket = %job.bucket, key = %job.key, quality = job.quality, attempt = job.attempts, worker, "job started");
        let cancel = CancelFlag::new();
        self.inner.running.lock().expect("running lock").insert(
            job.id,
            Running {
                cancel: cancel.clone(),
                worker: worker.to_owned(),
            },
        );
        let outcome = self.attempt(&job, worker, &cancel).await;
        self.inner
            .running
            .lock()
            .expect("running lock")
            .remove(&job.id);
        if self.inner.stopping.load(Ordering::SeqCst) && matches!(outcome, Outcome::Cancelled) {
            // Handed back to the queue by `shutdown`.
            return;
        }
        let db = self.db();
        let recorded = match &outcome {
            Outcome::Completed {
                path,
                size,
                encoder,
            } => queue::complete(db, job.id, worker, path, *size, encoder)
                .await
                .map(|ok| ok.then(|| "completed".to_owned())),
            // The cancel is recorded by whoever asked for it (or the job was taken over).
            Outcome::Cancelled => Ok(Some("cancelled".to_owned())),
            Outcome::Failed { error, retry } => {
                queue::fail(
                    db,
                    job.id,
                    worker,
                    error,
                    *retry,
                    self.inner.config.max_attempts,
                )
                .await
            }
        };
        match (recorded, &outcome) {
            (Ok(Some(status)), Outcome::Failed { error, .. }) => {
                tracing::warn!(job = job.id, status, error, "job attempt failed")
            }
            (Ok(Some(status)), Outcome::Completed { size, .. }) => {
                tracing::info!(job = job.id, status, size, "job completed")
            }
            (Ok(Some(status)), Outcome::Cancelled) => {
                tracing::info!(job = job.id, status, "job cancelled")
            }
            (Ok(None), _) => {
                tracing::info!(job = job.id, "job was cancelled or taken over meanwhile")
            }
            (Err(e), _) => {
                tracing::warn!(job = job.id, error = %e, "cannot record the job's result; its lease will expire")
            }
        }
    }

    async fn attempt(&self, job: &Job, worker: &str, cancel: &CancelFlag) -> Outcome {
        let Some(svc) = self.inner.media.clone() else {
            return Outcome::Failed {
                error: "media extensions are disabled on this gateway".into(),
                retry: true,
            };
        };
        let Some(quality) = queue::media_quality(job) else {
            return Outcome::Failed {
                error: format!("unknown quality {}", job.quality),
                retry: false,
            };
        };
        // The rendition is named after the ETag of the bytes actually read, so a replacement
        // written meanwhile never gets this file.
        let (store, bucket, key) = (
            self.inner.store.clone(),
            job.bucket.clone(),
            job.key.clone(),
        );
        let opened = tokio::task::spawn_blocking(move || {
            let path = parse_key(&key)?;
            store.open_object(&bucket, &path)
        })
        .await;
        let obj = match opened {
            Ok(Ok(o)) => o,
            Ok(Err(StoreError::NoSuchKey | StoreError::NoSuchBucket)) => {
                return Outcome::Failed {
                    error: "the object no longer exists".into(),
                    retry: false,
                };
            }
            Ok(Err(e)) => {
                return Outcome::Failed {
                    error: format!("cannot open the object: {e}"),
                    retry: true,
                };
            }
            Err(e) => {
                return Outcome::Failed {
                    error: format!("worker task failed: {e}"),
                    retry: true,
                };
            }
        };
        let progress = Arc::new(AtomicU8::new(0));
        let (p, c) = (progress.clone(), cancel.clone());
        let (bucket, key, etag, label) = (
            job.bucket.clone(),
            job.key.clone(),
            obj.meta.etag.clone(),
            format!("job-{}", job.id),
        );
        let source = obj.file;
        let mut task = tokio::task::spawn_blocking(move || {
            let object = ObjectRef {
                bucket: &bucket,
                key: &key,
                etag: &etag,
            };
            svc.produce(
                object,
                &source,
                quality,
                &label,
                |v| p.store(v, Ordering::Relaxed),
                &c,
            )
        });
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                r = &mut task => break r,
                _ = tick.tick() => {
                    let pct = progress.load(Ordering::Relaxed).min(99);
                    match queue::renew(self.db(), job.id, worker, pct, self.inner.config.lease).await {
                        Ok(true) => {}
                        // Cancelled through any gateway, or taken over after a lost lease.
                        Ok(false) => cancel.cancel(),
                        // Keep going: the lease covers a short database outage.
                        Err(e) => tracing::warn!(job = job.id, error = %e, "cannot renew the job's lease"),
                    }
                }
            }
        };
        let Installed {
            path: dest,
            outcome,
        } = match result {
            Ok(Ok(installed)) => installed,
            Ok(Err(MediaError::Cancelled)) => return Outcome::Cancelled,
            Ok(Err(
                e @ (MediaError::NotVideo(_)
                | MediaError::NotMedia(_)
                | MediaError::InvalidQuality(_)),
            )) => {
                return Outcome::Failed {
                    error: e.to_string(),
                    retry: false,
                };
            }
            Ok(Err(e)) => {
                return Outcome::Failed {
                    error: e.to_string(),
                    retry: true,
                };
            }
            Err(e) => {
                return Outcome::Failed {
                    error: format!("transcode task failed: {e}"),
                    retry: true,
                };
            }
        };
        let encoder = outcome.encoder.element_name().to_owned();
        let rel = dest
            .strip_prefix(self.inner.store.root())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| dest.display().to_string());
        let variant = Variant {
            path: rel.clone(),
            size: outcome.bytes,
            encoder: encoder.clone(),
        };
        // The catalog lists renditions of the current bytes only.
        match self.inner.catalog.get_object(&job.bucket, &job.key).await {
            Ok(Some(o)) if o.etag == obj.meta.etag => {
                if let Err(e) = self
                    .inner
                    .catalog
                    .set_variant(
                        &job.bucket,
                        &job.key,
                        &quality.height().to_string(),
                        &variant,
                    )
                    .await
                {
                    tracing::warn!(job = job.id, error = %e, "rendition not recorded in the catalog");
                }
            }
            Ok(_) => tracing::info!(
                job = job.id,
                "the object changed while transcoding; rendition kept but not listed"
            ),
            Err(e) => {
                tracing::warn!(job = job.id, error = %e, "rendition not recorded in the catalog")
            }
        }
        Outcome::Completed {
            path: rel,
            size: outcome.bytes,
            encoder,
        }
    }
}
