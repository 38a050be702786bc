//! Auto-transcode rules: jobs queued when a video is written (`--auto-transcode`,
//! `--auto-web-friendly`).

use std::time::Duration;

use nebula_media::Quality;
use nebula_media::detect;

use super::Jobs;
use crate::catalog::{MediaMeta, ProbeStatus};
use crate::events::ObjectEvents;
use crate::store::meta::ObjectMeta;

/// How long the web-friendly rule waits for the catalog's probe of a new object.
const PROBE_WAIT: Duration = Duration::from_secs(300);

/// Applies the auto-transcode rules to every write. Subscribe it after the catalog, so the
/// object's row exists when its jobs are queued.
#[derive(Debug)]
pub struct JobEvents {
    jobs: Jobs,
}

impl JobEvents {
    /// The rules of `jobs`' configuration.
    pub fn new(jobs: Jobs) -> Self {
        JobEvents { jobs }
    }
}

#[async_trait::async_trait]
impl ObjectEvents for JobEvents {
    async fn written(&self, bucket: &str, key: &str, meta: &ObjectMeta) {
        let cfg = self.jobs.config();
        if key.ends_with('/') || !detect::is_video(key, meta.content_type.as_deref()) {
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

    async fn deleted(&self, _bucket: &str, _key: &str) {}
}

/// Whether browsers play this source as it is (H.264 in MP4/MOV/WebM-ish containers).
fn browser_friendly(key: &str, media: &MediaMeta) -> bool {
    detect::browser_plays(
        key,
        media.container.as_deref(),
        media.video_codec.as_deref(),
    )
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
