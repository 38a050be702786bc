//! `GET /_nebula/v1/files?bucket=&prefix=&limit=&cursor=`: catalogued objects of a bucket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One page of objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilePage {
    /// Objects in key order.
    pub items: Vec<FileItem>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// An object as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileItem {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag (hex, no quotes).
    pub etag: String,
    /// Content type, when known.
    pub content_type: Option<String>,
    /// Last modification, RFC 3339.
    pub modified: String,
    /// The `x-amz-meta-description` of the object.
    pub description: Option<String>,
    /// What the media probe found; `null` for objects that are not media or not probed yet.
    pub media: Option<Media>,
    /// The poster of a probed video (`GET /{bucket}/{key}?thumbnail=W` serves it); `null`
    /// for other objects, videos not probed yet and gateways without posters.
    pub poster: Option<Poster>,
    /// Stored renditions by quality (`"480"`, ...).
    pub variants: BTreeMap<String, Variant>,
}

/// Facts of an audio or video file, from the media probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    /// Duration in seconds.
    pub duration_secs: Option<f64>,
    /// Picture width (0 for audio).
    pub width: u32,
    /// Picture height (0 for audio).
    pub height: u32,
    /// Frames per second.
    pub fps: Option<f64>,
    /// Video codec (`h264`, ...).
    pub video_codec: Option<String>,
    /// Audio codec (`aac`, ...).
    pub audio_codec: Option<String>,
    /// Overall bitrate in bits per second.
    pub bitrate: Option<u64>,
    /// Container (`mp4`, `matroska`, ...).
    pub container: Option<String>,
}

/// The poster the catalog lists for a probed video. The JPEG is taken on the first
/// `?thumbnail=W` request and kept with the renditions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Poster {
    /// The moment `?thumbnail=W` without `at` shows, in seconds (10 % in).
    pub at_secs: f64,
}

/// A stored rendition of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Its size in bytes.
    pub size: u64,
    /// The H.264 encoder that produced it.
    pub encoder: String,
}
