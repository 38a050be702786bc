//! HLS, the `?stream=hls` extension of GetObject, adapted to S3:
//!
//! - `?stream=hls`: the master playlist, one entry per quality of the ladder;
//! - `?stream=hls&quality=Q`: the VOD media playlist of one quality;
//! - `?stream=hls&quality=Q&segment=N|init`: one segment, from its file in the renditions
//!   store (produced first by `nebula-media` if needed) or its range of a finished
//!   background job's rendition, with byte ranges.
//! - `at=SECONDS` on either playlist: playlists that begin at the segment holding that
//!   moment, for players that cannot seek in fMP4 HLS (`nebula_media::hls::media_playlist`).
//! - `quality=original`: the source's own H.264/AAC cut at its keyframes (stream copy),
//!   listed in the master playlist only when `nebula-media` can copy the source for
//!   browsers; asked for anyway, it is 400 `InvalidArgument`.
//!
//! Every URL inside a playlist is presigned for the request's own access key and expires no
//! later than the request (`presign.rs`). The source is opened beneath its bucket by the
//! store and handed to `nebula-media` as an open file.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use nebula_media::MediaService;
use nebula_media::hls::{self, HlsQuality, SegmentId};
use s3s::dto::{GetObjectInput, GetObjectOutput, StreamingBlob};
use s3s::{S3Request, S3Response};

use super::media::{Video, file_output};
use super::presign::Presigner;
use super::{Gateway, RequestError, RequestResult, timestamp};

/// What an HLS request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HlsRequest {
    /// The media playlist (or its segment) of this quality; `None`: the master playlist.
    pub quality: Option<HlsQuality>,
    /// One segment of the media playlist.
    pub segment: Option<SegmentId>,
    /// Playlists begin at this moment (`at=`); never set with `segment`.
    pub start: Option<Duration>,
}

/// Parses a `segment=` value: `init` or a segment number.
pub(crate) fn parse_segment(v: &str) -> Option<SegmentId> {
    if v == "init" {
        return Some(SegmentId::Init);
    }
    v.parse().ok().map(SegmentId::Media)
}

/// GetObject with `?stream=hls`.
pub(crate) async fn get_object(
    gw: &Gateway,
    media: Arc<MediaService>,
    request: HlsRequest,
    (video, source): (Video, File),
    req: S3Request<GetObjectInput>,
) -> RequestResult<S3Response<GetObjectOutput>> {
    let input = req.input;
    let object = video.object();
    let (info, source) = media.hls_info(object, source).await?;
    let region = req
        .region
        .as_ref()
        .map_or(gw.region.as_str(), |r| r.as_str());
    let presigner =
        || Presigner::for_request(req.credentials.as_ref(), region, &req.uri, &req.headers);
    let duration = info.duration.unwrap_or_default();
    if let Some(at) = request.start
        && at >= duration
    {
        return Err(RequestError::InvalidArgument(format!(
            "at={:.3} is not before the end of the video ({:.3} s)",
            at.as_secs_f64(),
            duration.as_secs_f64()
        )));
    }
    // Carried into the media playlists' URLs, so the whole ladder starts there.
    let at_param = request.start.map(|at| format!("{:.3}", at.as_secs_f64()));
    // The stream copy's index: for the master playlist's `original` entry, and everything
    // of `quality=original`.
    let wants_copy = matches!(request.quality, None | Some(HlsQuality::Original));
    let (copy, source) = if wants_copy {
        media.hls_copy(object, source, &info).await?
    } else {
        (None, source)
    };
    let (quality, segment) = match (request.quality, request.segment) {
        (None, _) => {
            let p = presigner()?;
            let variants = media.hls_ladder(&info, copy.as_deref());
            let mut urls = HashMap::new();
            for v in &variants {
                let q = v.quality.param();
                let mut query = vec![("stream", "hls"), ("quality", q.as_str())];
                if let Some(at) = &at_param {
                    query.push(("at", at));
                }
                urls.insert(v.quality, p.url(&query)?);
            }
            let body = hls::master_playlist(&variants, &|q| urls[&q].clone());
            return Ok(playlist(body));
        }
        (Some(q), None) => {
            let p = presigner()?;
            let q_param = q.param();
            let segment_url =
                |s: &str| p.url(&[("stream", "hls"), ("quality", &q_param), ("segment", s)]);
            let init = segment_url("init")?;
            let count = match (q, &copy) {
                (HlsQuality::Transcode(_), _) => hls::segment_count(duration),
                (HlsQuality::Original, Some(c)) => c.segments.len() as u64,
                (HlsQuality::Original, None) => return Err(not_copyable()),
            };
            let media_urls = (0..count)
                .map(|n| segment_url(&n.to_string()))
                .collect::<RequestResult<Vec<_>>>()?;
            let url = |id| match id {
                SegmentId::Init => init.clone(),
                SegmentId::Media(n) => media_urls[n as usize].clone(),
            };
            let body = match &copy {
                Some(c) if q == HlsQuality::Original => {
                    hls::copy_media_playlist(c, request.start, &url)
                }
                _ => hls::media_playlist(duration, request.start, &url),
            };
            return Ok(playlist(body));
        }
        (Some(q), Some(s)) => (q, s),
    };
    let seg = match (quality, copy) {
        (HlsQuality::Transcode(q), _) => {
            media.hls_segment(object, source, &info, q, segment).await?
        }
        (HlsQuality::Original, Some(c)) => {
            media.hls_copy_segment(object, source, c, segment).await?
        }
        (HlsQuality::Original, None) => return Err(not_copyable()),
    };
    // A segment's file (or a job's rendition) is written once and never rewritten (only
    // evicted and made again), so its place and write time identify its bytes.
    let mut h = Md5::new();
    h.update(format!(
        "{}\0{}\0{}\0{}\0{}\0{:?}",
        object.etag,
        quality.param(),
        segment.file_name(),
        seg.offset,
        seg.size,
        seg.modified
    ));
    tracing::debug!(
        bucket = object.bucket,
        key = object.key,
        quality = %quality.param(),
        segment = %segment.file_name(),
        size = seg.size,
        "hls segment"
    );
    let mut output = file_output(
        seg.file,
        seg.offset,
        seg.size,
        input.range,
        seg.content_type,
    )?;
    output.e_tag = Some(s3s::dto::ETag::Strong(hex::encode(h.finalize())));
    output.last_modified = Some(timestamp(seg.modified));
    Ok(S3Response::new(output))
}

/// `quality=original` for a source that cannot be stream-copied.
fn not_copyable() -> RequestError {
    RequestError::InvalidArgument(
        "quality=original needs an H.264 source (AAC or no audio) in MP4, Matroska or MPEG-TS \
         that browsers play; this one is only transcoded (use 240 ... 1080)"
            .into(),
    )
}

/// A playlist answer. Not cached: the URLs inside expire.
fn playlist(body: String) -> S3Response<GetObjectOutput> {
    let len = body.len();
    S3Response::new(GetObjectOutput {
        body: Some(StreamingBlob::from(s3s::Body::from(body))),
        content_length: Some(len as i64),
        content_type: Some(hls::PLAYLIST_CONTENT_TYPE.to_owned()),
        cache_control: Some("no-store".into()),
        ..Default::default()
    })
}
