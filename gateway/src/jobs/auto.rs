//! Auto-transcode rules: jobs queued when a video is written (`--auto-transcode`,
//! `--auto-web-friendly`).

use std::sync::Arc;
use std::time::Duration;

use nebula_media::Quality;

use super::Jobs;
use crate::catalog::{MediaMeta, ProbeStatus};
use crate::s3::ObjectEvents;
use crate::store::meta::ObjectMeta;

/// How long the web-friendly rule waits for the catalog's probe of a new object.
const PROBE_WAIT: Duration = Duration::from_secs(300);

/// Containers browsers do not play (by extension, before or without a probe).
const UNFRIENDLY_EXTENSIONS: &[&str] = &[
    "mkv", "avi", "wmv", "flv", "ts", "m2ts", "mts", "mpg", "mpeg",
];

/// Containers browsers do not play (probe names).
const UNFRIENDLY_CONTAINERS: &[&str] = &["matroska", "avi", "asf", "flv", "mpegts", "mpeg"];

/// Passes writes and deletes on to the catalog, then applies the auto-transcode rules (after
/// the catalog, so the object's row exists when its jobs are queued).
#[derive(Debug)]
pub struct JobEvents {
    inner: Arc<dyn ObjectEvents>,
    jobs: Jobs,
}

impl JobEvents {
    /// Wraps the catalog's event listener.
    pub fn new(inner: Arc<dyn ObjectEvents>, jobs: Jobs) -> Self {
        JobEvents { inner, jobs }
    }
}

#[async_trait::async_trait]
impl ObjectEvents for JobEvents {
    async fn written(&self, bucket: &str, key: &str, meta: &ObjectMeta) {
        self.inner.written(bucket, key, meta).await;
        let cfg = self.jobs.config();
        if key.ends_with('/')
            || !crate::transcode::looks_like_video(meta.content_type.as_deref(), key)
        {
            return;
        }
        // In the background: queuing must neither slow down nor fail the write.
        if !cfg.auto_qualities.is_empty() {
            let (jobs, bucket, key, qualities) = (
                self.jobs.clone(),
                bucket.to_owned(),
                key.to_owned(),
                cfg.auto_qualities.clone(),
            );
            tokio::spawn(async move {
                match jobs.enqueue(&bucket, &key, &qualities).await {
                    Ok(j) => tracing::info!(bucket, key, jobs = j.len(), "auto-transcode queued"),
                    Err(e) => tracing::warn!(bucket, key, error = %e, "auto-transcode not queued"),
                }
            });
        }
        if cfg.auto_web_friendly {
            let (jobs, bucket, key, etag) = (
                self.jobs.clone(),
                bucket.to_owned(),
                key.to_owned(),
                meta.etag.clone(),
            );
            tokio::spawn(async move { jobs.web_friendly(bucket, key, etag).await });
        }
    }

    async fn deleted(&self, bucket: &str, key: &str) {
        self.inner.deleted(bucket, key).await;
    }
}

/// Whether browsers play this source as it is (H.264 in MP4/MOV/WebM-ish containers).
fn browser_friendly(key: &str, media: &MediaMeta) -> bool {
    let ext = key
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if UNFRIENDLY_EXTENSIONS.contains(&ext.as_str()) {
        return false;
    }
    if media
        .container
        .as_deref()
        .is_some_and(|c| UNFRIENDLY_CONTAINERS.contains(&c))
    {
        return false;
    }
    media.video_codec.as_deref().is_none_or(|c| c == "h264")
}

impl Jobs {
    /// The web-friendly rule: once the catalog has probed the new object, queue an H.264 MP4
    /// at the source's own height (at most 1080) if browsers cannot play it as it is.
    async fn web_friendly(self, bucket: String, key: String, etag: String) {
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        let media = loop {
            match self.inner.catalog.get_object(&bucket, &key).await {
                Ok(Some(o)) if o.etag != etag => return,
                Ok(Some(o)) if o.probe_status == ProbeStatus::Ok => match o.media {
                    Some(m) => break m,
                    None => return,
                },
                Ok(Some(o)) if o.probe_status != ProbeStatus::Pending => return,
                Ok(None) => return,
                Ok(Some(_)) => {}
                Err(e) => tracing::debug!(bucket, key, error = %e, "waiting for the probe"),
            }
            if tokio::time::Instant::now() > deadline {
                tracing::info!(
                    bucket,
                    key,
                    "no probe result in time; web-friendly rendition not queued"
                );
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        if media.height == 0 || browser_friendly(&key, &media) {
            return;
        }
        let quality = Quality::for_output_height(media.height.min(1080));
        match self.enqueue(&bucket, &key, &[quality]).await {
            Ok(_) => tracing::info!(
                bucket,
                key,
                quality = quality.height(),
                "web-friendly rendition queued"
            ),
            Err(e) => tracing::warn!(bucket, key, error = %e, "web-friendly rendition not queued"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friendly_sources() {
        let h264_mp4 = MediaMeta {
            video_codec: Some("h264".into()),
            container: Some("mp4".into()),
            ..Default::default()
        };
        assert!(browser_friendly("a.mp4", &h264_mp4));
        assert!(!browser_friendly("a.mkv", &h264_mp4));
        let hevc = MediaMeta {
            video_codec: Some("hevc".into()),
            container: Some("mp4".into()),
            ..Default::default()
        };
        assert!(!browser_friendly("a.mp4", &hevc));
        let ts = MediaMeta {
            video_codec: Some("h264".into()),
            container: Some("mpegts".into()),
            ..Default::default()
        };
        assert!(!browser_friendly("clip", &ts));
    }
}
