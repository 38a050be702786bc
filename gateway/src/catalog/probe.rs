//! Background probing of audio and video objects with GStreamer's Discoverer.
//!
//! The database is the queue: writes mark media-looking objects `pending`, and one worker
//! probes them oldest first, one at a time (a Discoverer run decodes a little of the file and
//! can take seconds; one at a time keeps it from competing with transcodes and requests).
//! The worker never touches S3 requests; a failed probe is recorded on the row.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nebula_media::MediaEngine;

use super::{Catalog, MediaMeta};
use crate::store::Store;
use crate::store::keys::parse_key;

/// File extensions probed even when the content type does not say audio or video.
const MEDIA_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mkv", "webm", "mov", "avi", "ts", "mts", "m2ts", "mpg", "mpeg", "wmv", "flv",
    "3gp", "ogv", "mp3", "m4a", "aac", "flac", "ogg", "oga", "opus", "wav", "wma",
];

/// How long the worker sleeps after a database error before asking again.
const RETRY: Duration = Duration::from_secs(5);

/// Without a wake-up, the worker still looks for pending rows this often (rows marked pending
/// by another gateway sharing the database, or by `reindex`).
const IDLE_POLL: Duration = Duration::from_secs(60);

/// True for objects that look like audio or video by content type or extension.
pub fn looks_like_media(key: &str, content_type: Option<&str>) -> bool {
    if let Some(ct) = content_type {
        let ct = ct.trim().to_ascii_lowercase();
        if ct.starts_with("video/") || ct.starts_with("audio/") {
            return true;
        }
    }
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            MEDIA_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(ext))
        }
        _ => false,
    }
}

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
        let file = store.open_file(&bucket, &path).map_err(|e| e.to_string())?;
        // GStreamer opens by name: it reopens the object through our descriptor, so it reads
        // exactly the file the store's checked open found inside the bucket.
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let info = engine.probe(&fd_path).map_err(|e| e.to_string());
        drop(file);
        info
    })
    .await;
    match probed {
        Ok(Ok(info)) => Ok(MediaMeta::from(&info)),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("probe worker failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_media;

    #[test]
    fn media_by_type_or_extension() {
        assert!(looks_like_media("a/b.MP4", None));
        assert!(looks_like_media(
            "song.flac",
            Some("application/octet-stream")
        ));
        assert!(looks_like_media("blob", Some("video/mp4")));
        assert!(looks_like_media("blob", Some("Audio/mpeg")));
        assert!(!looks_like_media("notes.txt", Some("text/plain")));
        assert!(!looks_like_media(".mp4", None));
        assert!(!looks_like_media("dir.mp4/readme", None));
    }
}
