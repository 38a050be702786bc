//! The media extension of GetObject, adapted to S3: `?transcode=h264&quality=480` (or
//! `quality` alone) answers with a rendition of a video object from `nebula-media` (the
//! finished file with byte ranges, or a live transcode); `?thumbnail=320` (optionally
//! `&at=SECONDS`) with a JPEG poster, kept in the same store; `?stream=hls[&quality=Q
//! [&segment=N]]` with HLS playlists and segments (`hls.rs`). This file only parses the
//! query and builds the output with its `x-nebula-*` headers; media errors become S3 errors
//! in `error.rs`, with every other failure.
//!
//! The parameters are part of the request's query, so SigV4 (header or presigned) covers
//! them: s3s verifies the signature before GetObject runs, and editing `quality`,
//! `thumbnail`, `stream` or `segment` in a presigned URL gives 403.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use nebula_media::hls::HlsQuality;
use nebula_media::{MAX_POSTER_WIDTH, MediaService, ObjectRef, Quality, Rendition, RenditionInfo};
use s3s::dto::{ETag, GetObjectInput, GetObjectOutput, Range, StreamingBlob};
use s3s::{S3Request, S3Response};

use super::hls::{self, HlsRequest};
use super::{Gateway, RequestError, RequestResult, blocking, object_path, timestamp};
use crate::events::ObjectEvents;
use crate::store::meta::ObjectMeta;
use crate::store::read::file_stream;

/// What a request asked of the media extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaRequest {
    /// An H.264 rendition at this quality.
    Transcode(Quality),
    /// A JPEG poster this wide, of the frame at `at` (`None`: 10 % in).
    Thumbnail {
        /// Width in pixels, 1..=[`MAX_POSTER_WIDTH`].
        width: u32,
        /// Moment of the frame, in whole milliseconds.
        at: Option<Duration>,
    },
    /// An HLS playlist or segment.
    Hls(HlsRequest),
}

/// Reads the media parameters from a query string: `None` for a plain GetObject (no media
/// parameters, or `quality=original`). `transcode` alone means 720p.
pub(crate) fn parse_query(query: Option<&str>) -> RequestResult<Option<MediaRequest>> {
    let mut transcode = None;
    let mut quality = None;
    let mut thumbnail = None;
    let mut at = None;
    let mut stream = None;
    let mut segment = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "transcode" => transcode = Some(v),
            "quality" => quality = Some(v),
            "thumbnail" => thumbnail = Some(v),
            "at" => at = Some(v),
            "stream" => stream = Some(v),
            "segment" => segment = Some(v),
            _ => {}
        }
    }
    if let Some(s) = &stream
        && !s.eq_ignore_ascii_case("hls")
    {
        return Err(invalid(format!(
            "unknown stream format '{s}': this gateway streams hls"
        )));
    }
    if stream.is_some() {
        if thumbnail.is_some() {
            return Err(invalid("stream cannot be combined with thumbnail".into()));
        }
        let start = at.as_deref().map(parse_at).transpose()?;
        return parse_hls(quality, segment, start).map(|r| Some(MediaRequest::Hls(r)));
    }
    if segment.is_some() {
        return Err(invalid("segment applies to stream=hls only".into()));
    }
    if let Some(width) = thumbnail {
        if transcode.is_some() || quality.is_some() {
            return Err(invalid(
                "thumbnail cannot be combined with transcode or quality".into(),
            ));
        }
        return parse_thumbnail(&width, at.as_deref()).map(Some);
    }
    if at.is_some() {
        return Err(invalid("at applies to thumbnail only".into()));
    }
    if let Some(t) = &transcode
        && !t.eq_ignore_ascii_case("h264")
    {
        return Err(invalid(format!(
            "unknown transcode target '{t}': this gateway produces h264"
        )));
    }
    match (transcode, quality) {
        (None, None) => Ok(None),
        (_, Some(q)) if q.eq_ignore_ascii_case("original") => Ok(None),
        (_, Some(q)) => q
            .parse::<Quality>()
            .map(|q| Some(MediaRequest::Transcode(q)))
            .map_err(|_| {
                invalid(format!(
                    "unknown quality '{q}': use 240, 360, 480, 720, 1080 or original"
                ))
            }),
        (Some(_), None) => Ok(Some(MediaRequest::Transcode(Quality::P720))),
    }
}

/// `thumbnail=W` and `at=SECONDS`.
fn parse_thumbnail(width: &str, at: Option<&str>) -> RequestResult<MediaRequest> {
    let width = width
        .parse::<u32>()
        .ok()
        .filter(|w| (1..=MAX_POSTER_WIDTH).contains(w))
        .ok_or_else(|| {
            invalid(format!(
                "thumbnail must be a width in pixels from 1 to {MAX_POSTER_WIDTH}, not '{width}'"
            ))
        })?;
    let at = at.map(parse_at).transpose()?;
    Ok(MediaRequest::Thumbnail { width, at })
}

/// `at=SECONDS`: a moment of the video, in whole milliseconds.
fn parse_at(s: &str) -> RequestResult<Duration> {
    // Seconds with a fraction; a week covers any film and keeps the arithmetic sane.
    let secs = s
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (0.0..=604_800.0).contains(v))
        .ok_or_else(|| {
            invalid(format!(
                "at must be a position in seconds (e.g. 12.5), not '{s}'"
            ))
        })?;
    Ok(Duration::from_millis((secs * 1000.0).round() as u64))
}

/// The HLS parameters: `quality` (none: the master playlist), `segment` (`init` or N) and
/// `at` (playlists that start at that moment).
fn parse_hls(
    quality: Option<String>,
    segment: Option<String>,
    start: Option<Duration>,
) -> RequestResult<HlsRequest> {
    let quality = match quality {
        None => None,
        Some(q) if q.eq_ignore_ascii_case("original") => Some(HlsQuality::Original),
        Some(q) => Some(HlsQuality::Transcode(q.parse::<Quality>().map_err(
            |_| {
                invalid(format!(
                    "unknown HLS quality '{q}': use 240, 360, 480, 720, 1080 or original"
                ))
            },
        )?)),
    };
    let segment = match segment {
        None => None,
        Some(_) if quality.is_none() => {
            return Err(invalid(
                "segment needs quality: segments belong to a media playlist".into(),
            ));
        }
        Some(s) => Some(hls::parse_segment(&s).ok_or_else(|| {
            invalid(format!(
                "invalid segment '{s}': use init or a segment number"
            ))
        })?),
    };
    if segment.is_some() && start.is_some() {
        return Err(invalid(
            "at applies to playlists: a segment is always the same moment".into(),
        ));
    }
    Ok(HlsRequest {
        quality,
        segment,
        start,
    })
}

fn invalid(message: String) -> RequestError {
    RequestError::InvalidArgument(message)
}

/// GetObject for a media request.
pub(crate) async fn get_object(
    gw: &Gateway,
    request: MediaRequest,
    req: S3Request<GetObjectInput>,
) -> RequestResult<S3Response<GetObjectOutput>> {
    let Some(media) = gw.media.clone() else {
        return Err(RequestError::NotImplemented(
            "media extensions are disabled on this gateway (GStreamer is not available)",
        ));
    };
    let what = match request {
        MediaRequest::Transcode(_) => "transcode and quality apply to",
        MediaRequest::Thumbnail { .. } => "thumbnail applies to",
        MediaRequest::Hls(_) => "stream applies to",
    };
    let video = open_video(gw, &req.input.bucket, &req.input.key, what).await?;
    match request {
        MediaRequest::Transcode(quality) => transcode(media, quality, video, req.input).await,
        MediaRequest::Thumbnail { width, at } => {
            thumbnail(media, width, at, video, req.input).await
        }
        MediaRequest::Hls(hls) => hls::get_object(gw, media, hls, video, req).await,
    }
}

/// A video object opened beneath its bucket: what names the bytes read (the source file is
/// handed over separately, to the media step that reads it).
pub(crate) struct Video {
    bucket: String,
    key: String,
    etag: String,
    /// The object's Last-Modified.
    pub modified: SystemTime,
}

impl Video {
    /// The bytes read, as the renditions store names them.
    pub(crate) fn object(&self) -> ObjectRef<'_> {
        ObjectRef {
            bucket: &self.bucket,
            key: &self.key,
            etag: &self.etag,
        }
    }
}

/// Opens a video object beneath its bucket; anything else is 415 (`what` names the
/// parameters that apply to videos only).
async fn open_video(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    what: &str,
) -> RequestResult<(Video, File)> {
    let path = object_path(key)?;
    let (store, b, p) = (gw.store.clone(), bucket.to_owned(), path.clone());
    let obj = blocking(move || store.open_object(&b, &p)).await?;
    let content_type = obj.meta.content_type.as_deref();
    if path.is_folder_marker || !nebula_media::detect::is_video(&path.key, content_type) {
        return Err(RequestError::UnsupportedMediaType(format!(
            "'{}' is not a video (content type {}): {what} video objects only",
            path.key,
            content_type.unwrap_or("unknown")
        )));
    }
    let video = Video {
        bucket: bucket.to_owned(),
        key: path.key,
        etag: obj.meta.etag,
        modified: obj.modified,
    };
    Ok((video, obj.file))
}

/// A rendition: the finished file with byte ranges, or a live transcode.
async fn transcode(
    media: Arc<MediaService>,
    quality: Quality,
    (video, source): (Video, File),
    input: GetObjectInput,
) -> RequestResult<S3Response<GetObjectOutput>> {
    let rendition = media.rendition(video.object(), source, quality).await?;
    let headers = rendition_headers(rendition.info());
    let hit = matches!(rendition, Rendition::Finished(_));
    crate::metrics::cache(crate::metrics::Cache::Rendition, hit);
    let output = match rendition {
        Rendition::Finished(f) => file_output(
            f.file,
            0,
            f.size,
            input.range,
            nebula_media::STREAM_CONTENT_TYPE,
        )?,
        Rendition::Live(stream) => GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_type: Some(nebula_media::STREAM_CONTENT_TYPE.to_owned()),
            ..Default::default()
        },
    };
    Ok(S3Response::with_headers(output, headers))
}

/// A poster: served from the renditions store like an object, with its length, an ETag
/// naming these bytes of the object at this size and moment, the object's Last-Modified
/// and byte ranges.
async fn thumbnail(
    media: Arc<MediaService>,
    width: u32,
    at: Option<Duration>,
    (video, source): (Video, File),
    input: GetObjectInput,
) -> RequestResult<S3Response<GetObjectOutput>> {
    let object = video.object();
    let name = media.renditions().poster_name(object, width, at);
    let poster = media.poster(object, source, width, at).await?;
    let headers = rendition_headers(&poster.info);
    let mut output = file_output(
        poster.file,
        0,
        poster.size,
        input.range,
        nebula_media::POSTER_CONTENT_TYPE,
    )?;
    // The file's name already hashes the object's ETag, the width and the moment.
    let variant = name
        .rsplit_once('-')
        .map_or(name.as_str(), |(_, v)| v)
        .trim_end_matches(".jpg");
    output.e_tag = Some(ETag::Strong(variant.to_owned()));
    output.last_modified = Some(timestamp(video.modified));
    Ok(S3Response::with_headers(output, headers))
}

/// The output for `size` bytes at `offset` of a file of the renditions store (a rendition,
/// poster or HLS segment): all of them, or the asked byte range of them.
pub(crate) fn file_output(
    file: File,
    offset: u64,
    size: u64,
    range: Option<Range>,
    content_type: &str,
) -> RequestResult<GetObjectOutput> {
    let range = match range {
        None => None,
        Some(r) => Some(r.check(size).map_err(|_| RequestError::InvalidRange)?),
    };
    let (start, len) = range
        .as_ref()
        .map(|r| (r.start, r.end - r.start))
        .unwrap_or((0, size));
    Ok(GetObjectOutput {
        body: Some(StreamingBlob::wrap(file_stream(file, offset + start, len))),
        content_length: Some(len as i64),
        content_range: range
            .as_ref()
            .map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, size)),
        content_type: Some(content_type.to_owned()),
        accept_ranges: Some("bytes".into()),
        ..Default::default()
    })
}

/// `x-nebula-encoder` and `x-nebula-resolution`: what produced the rendition.
fn rendition_headers(info: &RenditionInfo) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&info.encoder) {
        h.insert("x-nebula-encoder", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}x{}", info.width, info.height)) {
        h.insert("x-nebula-resolution", v);
    }
    h
}

/// The renditions store subscribes to object events: a replaced or deleted object's
/// renditions are never served again.
#[async_trait::async_trait]
impl ObjectEvents for MediaService {
    async fn written(&self, bucket: &str, key: &str, _meta: &ObjectMeta) {
        self.invalidate(bucket, key);
    }

    async fn deleted(&self, bucket: &str, key: &str) {
        self.invalidate(bucket, key);
    }
}

/// Another gateway wrote or deleted an object: its HLS sessions here stop, and renditions this
/// gateway made of it go (that gateway's own store did not know about them).
impl crate::events::ChangedElsewhere for MediaService {
    fn changed_elsewhere(&self, bucket: &str, key: &str) {
        self.invalidate(bucket, key);
    }

    fn forget_all(&self) {
        // Nothing can be served stale: renditions, segments and probe results are found by the
        // ETag of the bytes the request read.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebula_media::hls::SegmentId;

    #[test]
    fn query_parsing() {
        assert_eq!(parse_query(None).unwrap(), None);
        assert_eq!(
            parse_query(Some("quality=480")).unwrap(),
            Some(MediaRequest::Transcode(Quality::P480))
        );
        assert_eq!(
            parse_query(Some("transcode=h264&quality=720&X-Amz-Signature=ab")).unwrap(),
            Some(MediaRequest::Transcode(Quality::P720))
        );
        assert_eq!(parse_query(Some("quality=original")).unwrap(), None);
        assert!(parse_query(Some("quality=999")).is_err());
        assert!(parse_query(Some("transcode=vp9&quality=480")).is_err());
    }

    #[test]
    fn hls_parsing() {
        let hls = |quality, segment| {
            Some(MediaRequest::Hls(HlsRequest {
                quality,
                segment,
                start: None,
            }))
        };
        assert_eq!(parse_query(Some("stream=hls")).unwrap(), hls(None, None));
        assert_eq!(
            parse_query(Some("stream=hls&quality=480&X-Amz-Date=1")).unwrap(),
            hls(Some(HlsQuality::Transcode(Quality::P480)), None)
        );
        assert_eq!(
            parse_query(Some("segment=init&quality=720&stream=hls")).unwrap(),
            hls(
                Some(HlsQuality::Transcode(Quality::P720)),
                Some(SegmentId::Init)
            )
        );
        assert_eq!(
            parse_query(Some("stream=hls&quality=240&segment=12")).unwrap(),
            hls(
                Some(HlsQuality::Transcode(Quality::P240)),
                Some(SegmentId::Media(12))
            )
        );
        // The stream copy of the source (the master playlist lists it when it can be made).
        assert_eq!(
            parse_query(Some("stream=hls&quality=Original&segment=3")).unwrap(),
            hls(Some(HlsQuality::Original), Some(SegmentId::Media(3)))
        );
        // Playlists that begin at a moment (players that cannot seek in fMP4 HLS).
        assert_eq!(
            parse_query(Some("stream=hls&at=5025.5")).unwrap(),
            Some(MediaRequest::Hls(HlsRequest {
                quality: None,
                segment: None,
                start: Some(Duration::from_millis(5_025_500)),
            }))
        );
        for bad in [
            "stream=dash",
            "stream=hls&segment=1",
            "stream=hls&quality=480&segment=1&at=3",
            "stream=hls&at=-1",
            "stream=hls&quality=copy",
            "stream=hls&quality=480&segment=-1",
            "stream=hls&thumbnail=320",
            "quality=480&segment=1",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn thumbnail_parsing() {
        assert_eq!(
            parse_query(Some("thumbnail=320&X-Amz-Signature=ab")).unwrap(),
            Some(MediaRequest::Thumbnail {
                width: 320,
                at: None
            })
        );
        assert_eq!(
            parse_query(Some("at=12.3456&thumbnail=1280")).unwrap(),
            Some(MediaRequest::Thumbnail {
                width: 1280,
                at: Some(Duration::from_millis(12_346))
            })
        );
        for bad in [
            "thumbnail=0",
            "thumbnail=1281",
            "thumbnail=abc",
            "thumbnail=",
            "thumbnail=320&at=-1",
            "thumbnail=320&at=abc",
            "thumbnail=320&at=NaN",
            "thumbnail=320&at=inf",
            "thumbnail=320&quality=480",
            "at=5",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
