//! Rows of the catalog as the rest of the gateway sees them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::store::meta::ObjectMeta;

/// Probe state of an object's `media` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeStatus {
    /// Not audio or video by its name and type: never probed.
    None,
    /// Waiting for the background prober.
    Pending,
    /// Probed; `media` is filled.
    Ok,
    /// Probing failed; `probe_error` says why.
    Error,
}

impl ProbeStatus {
    /// The value stored in the `probe_status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStatus::None => "none",
            ProbeStatus::Pending => "pending",
            ProbeStatus::Ok => "ok",
            ProbeStatus::Error => "error",
        }
    }

    /// Parses the stored value; unknown values (a newer gateway) read as `None`.
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => ProbeStatus::Pending,
            "ok" => ProbeStatus::Ok,
            "error" => ProbeStatus::Error,
            _ => ProbeStatus::None,
        }
    }
}

/// What the prober found out about an audio or video object (the `media` JSON column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaMeta {
    /// Duration in seconds, if the container declares one.
    pub duration: Option<f64>,
    /// Width of the first video stream (0 without video).
    pub width: u32,
    /// Height of the first video stream (0 without video).
    pub height: u32,
    /// Frame rate as frames per second, e.g. 29.97.
    pub frame_rate: Option<f64>,
    /// Short video codec name (`h264`, `hevc`, ...).
    pub video_codec: Option<String>,
    /// Short audio codec name (`aac`, `mp3`, ...).
    pub audio_codec: Option<String>,
    /// Overall bitrate in bit/s.
    pub bitrate: Option<u64>,
    /// Container short name (`mp4`, `matroska`, ...).
    pub container: Option<String>,
}

impl From<&nebula_media::MediaInfo> for MediaMeta {
    fn from(m: &nebula_media::MediaInfo) -> Self {
        MediaMeta {
            duration: m.duration.map(|d| d.as_secs_f64()),
            width: m.width,
            height: m.height,
            frame_rate: m.fps(),
            video_codec: m.video_codec.clone(),
            audio_codec: m.audio_codec.clone(),
            bitrate: m.bitrate,
            container: m.container.clone(),
        }
    }
}

/// One rendition of an object (an entry of the `variants` JSON column, keyed by quality).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Where the rendition file is.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// The H.264 encoder element that produced it.
    pub encoder: String,
}

/// One row of the `objects` table.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogObject {
    /// Row id (transcode jobs refer to it).
    pub id: i64,
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Content-Type, if recorded.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs.
    pub user_metadata: BTreeMap<String, String>,
    /// Base64 SHA-256 when the uploader supplied one.
    pub sha256: Option<String>,
    /// When the catalog first saw this key.
    pub created_at: OffsetDateTime,
    /// Modification time of the file.
    pub modified_at: OffsetDateTime,
    /// Free text for later issues.
    pub description: Option<String>,
    /// Probe result for audio and video.
    pub media: Option<MediaMeta>,
    /// Renditions by quality.
    pub variants: BTreeMap<String, Variant>,
    /// Probe state.
    pub probe_status: ProbeStatus,
    /// Why probing failed.
    pub probe_error: Option<String>,
}

/// The poster the catalog lists for a probed video. The JPEG itself is taken on demand by
/// `?thumbnail=W` and kept in the renditions store (evicted and invalidated with the
/// renditions), so the catalog keeps no copy that could go stale: what it records is that
/// the probe found a picture to take one from, and where.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PosterMeta {
    /// The moment `?thumbnail=W` without `at` shows, in seconds (10 % in).
    pub at_secs: f64,
}

impl CatalogObject {
    /// The poster of this object: `Some` for a video (by name and type, as `?thumbnail=`
    /// decides) whose probe found a video stream of known size; `None` for audio, other files
    /// and videos not (successfully) probed.
    pub fn poster(&self) -> Option<PosterMeta> {
        let media = self.media.as_ref()?;
        let video = self.probe_status == ProbeStatus::Ok
            && media.width > 0
            && media.height > 0
            && nebula_media::detect::is_video(&self.key, self.content_type.as_deref());
        video.then(|| PosterMeta {
            at_secs: nebula_media::default_poster_moment(
                media
                    .duration
                    .and_then(|d| std::time::Duration::try_from_secs_f64(d).ok()),
            )
            .as_secs_f64(),
        })
    }
}

/// The columns of `objects` as decoded by sqlx (the same on both engines).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ObjectRow {
    id: i64,
    bucket: String,
    key: String,
    size: i64,
    etag: String,
    content_type: Option<String>,
    user_metadata: Json<BTreeMap<String, String>>,
    sha256: Option<String>,
    created_at: OffsetDateTime,
    modified_at: OffsetDateTime,
    description: Option<String>,
    media: Option<Json<MediaMeta>>,
    variants: Json<BTreeMap<String, Variant>>,
    probe_status: String,
    probe_error: Option<String>,
}

/// Columns selected into [`ObjectRow`].
pub(crate) const OBJECT_COLUMNS: &str = "id, bucket, key, size, etag, content_type, user_metadata, sha256, \
     created_at, modified_at, description, media, variants, probe_status, probe_error";

impl From<ObjectRow> for CatalogObject {
    fn from(r: ObjectRow) -> Self {
        CatalogObject {
            id: r.id,
            bucket: r.bucket,
            key: r.key,
            size: u64::try_from(r.size).unwrap_or(0),
            etag: r.etag,
            content_type: r.content_type,
            user_metadata: r.user_metadata.0,
            sha256: r.sha256,
            created_at: r.created_at,
            modified_at: r.modified_at,
            description: r.description,
            media: r.media.map(|m| m.0),
            variants: r.variants.0,
            probe_status: ProbeStatus::parse(&r.probe_status),
            probe_error: r.probe_error,
        }
    }
}

/// A page of [`crate::catalog::Catalog::list_objects`].
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPage {
    /// Rows in key order.
    pub objects: Vec<CatalogObject>,
    /// Pass back as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// The columns an upsert writes, taken from the filesystem's metadata.
#[derive(Debug, Clone)]
pub(crate) struct NewObject {
    pub bucket: String,
    pub key: String,
    pub size: i64,
    pub etag: String,
    pub content_type: Option<String>,
    pub user_metadata: Json<BTreeMap<String, String>>,
    pub sha256: Option<String>,
    pub mtime_ns: i64,
    pub modified_at: OffsetDateTime,
    pub probe_status: &'static str,
}

impl NewObject {
    /// The row for `bucket/key` with metadata `meta`.
    pub fn from_meta(bucket: &str, key: &str, meta: &ObjectMeta) -> Self {
        let mtime_ns = i64::try_from(meta.mtime_ns).unwrap_or(0);
        let probe = if nebula_media::detect::is_media(key, meta.content_type.as_deref()) {
            ProbeStatus::Pending
        } else {
            ProbeStatus::None
        };
        NewObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: i64::try_from(meta.size).unwrap_or(i64::MAX),
            etag: meta.etag.clone(),
            content_type: meta.content_type.clone(),
            user_metadata: Json(meta.user.clone()),
            sha256: meta.checksums.sha256.clone(),
            mtime_ns,
            modified_at: OffsetDateTime::from_unix_timestamp_nanos(meta.mtime_ns)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            probe_status: probe.as_str(),
        }
    }
}
