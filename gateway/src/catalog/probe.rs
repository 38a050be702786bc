//! Background probing of audio and video objects with GStreamer's Discoverer.
//!
//! The database is the queue: writes mark media-looking objects
//! ([`nebula_media::detect::is_media`]) `pending`, and one worker probes them oldest first,
//! one at a time (a Discoverer run decodes a little of the file and can take seconds; one at
//! a time keeps it from competing with transcodes and requests).
//! The worker never touches S3 requests; a failed probe is recorded on the row.

use std::sync::Arc;
use std::time::Duration;

use nebula_media::MediaEngine;

use super::{Catalog, MediaMeta};
use crate::store::Store;
use crate::store::keys::parse_key;

/// How long the worker sleeps after a database error before asking again.
const RETRY: Duration = Duration::from_secs(5);

/// Without a wake-up, the worker still looks for pending rows this often (rows marked pending
/// by another gateway sharing the database, or by `reindex`).
const IDLE_POLL: Duration = Duration::from_secs(60);

impl Catalog {
    /// Starts the background prober on the tokio runtime. It runs until the process ends.
    pub fn start_prober(&self, store: Arc<Store>, engine: MediaEngine) {
        let catalog = self.clone();
        tokio::spawn(async move { catalog.probe_loop(store, engine).await });
    }

    async fn probe_loop(self, store: Arc<Store>, engine: MediaEngine) {
        loop {
            match self.next_pending_probe().await {
                Ok(Some((bucket, key, etag))) => {
                    let result = probe_one(store.clone(), &engine, &bucket, &key).await;
                    match &result {
                        Ok(_) => tracing::debug!(bucket, key, "probed"),
                        Err(e) => tracing::info!(bucket, key, error = %e, "probe failed"),
                    }
                    if let Err(e) = self.set_probe_result(&bucket, &key, &etag, result).await {
                        tracing::warn!(bucket, key, error = %e, "cannot record probe result");
                        tokio::time::sleep(RETRY).await;
                    }
                }
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, self.probe_wakeup.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "probe queue unavailable");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Probes one object; the error is the message stored in `probe_error`.
async fn probe_one(
    store: Arc<Store>,
    engine: &MediaEngine,
    bucket: &str,
    key: &str,
) -> Result<MediaMeta, String> {
    let path = parse_key(key).map_err(|e| e.to_string())?;
    if path.is_folder_marker {
        return Err("a folder marker has no media".to_owned());
    }
    let (engine, bucket) = (engine.clone(), bucket.to_owned());
    let probed = tokio::task::spawn_blocking(move || {
        // The engine reads exactly the file the store's checked open found inside the bucket.
        let file = store.open_file(&bucket, &path).map_err(|e| e.to_string())?;
        engine.probe(&file).map_err(|e| e.to_string())
    })
    .await;
    match probed {
        Ok(Ok(info)) => Ok(MediaMeta::from(&info)),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("probe worker failed: {e}")),
    }
}
