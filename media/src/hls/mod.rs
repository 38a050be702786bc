//! Adaptive HLS produced on demand: fMP4/CMAF segments cut from a running transcode,
//! master and media playlists.
//!
//! Each quality of a source is one [`HlsSession`]: a request for segment N is served from
//! its file when it exists, waits when the running pipeline is about to reach it, and
//! otherwise (re)starts the pipeline at N with a flushing, accurate seek, so a cold seek
//! costs one pipeline start plus one segment's encode (see `session.rs`).
//!
//! Timeline rules that keep segments from different runs interchangeable:
//! - a keyframe is forced at the first frame at or after every `N × SEGMENT` of the source
//!   timeline (force-key-unit events, whatever the encoder or frame rate);
//! - every fragment's decode time (`tfdt`) is moved to its position on the source
//!   timeline, anchored on the first buffer each mux pad received, and each segment is
//!   written as one `moof` with a `traf` per track, numbered segment + 1 (`run.rs` reads
//!   mp4mux's fragments back with `fmp4.rs` and writes them with `mux.rs`);
//! - profile, level, track order, audio rate and channel count are pinned (`cmaf.rs`), so
//!   the init segment of any run describes every run's segments.
//!
//! H.264 sources a browser plays also get an `original` entry whose segments are cut from
//! the source at its own keyframes without re-encoding (`copy.rs`, written by `mux.rs`).

mod copy;
mod demux;
mod fmp4;
mod mux;
mod playlist;
pub(crate) mod run;
mod session;
mod sessions;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cmaf::{H264_LEVEL_IDC, h264_profile};
use crate::encoder::Encoder;
use crate::probe::MediaInfo;
use crate::quality::{Quality, output_size};

pub use copy::{CopyIndex, CopySegment, may_copy};
pub use playlist::{copy_media_playlist, master_playlist, media_playlist};
pub(crate) use session::write_new;
pub use session::{AcquireRun, HlsSession, RunPermit, SegmentId};
pub(crate) use sessions::Sessions;

/// Target length of every segment.
///
/// 3.2 s: about Jellyfin's 3 s for transcodes (a cold seek encodes at most one short
/// segment before playback starts), and exactly 150 AAC frames at 48 kHz (HLS audio is
/// always resampled to 48 kHz), so an audio fragment ends exactly on a segment boundary:
/// segments from two pipeline runs meet without a gap or a doubled partial AAC frame. At
/// 25, 30, 50 and 60 fps it is also a whole number of frames (80, 96, 160, 192).
pub const SEGMENT_DURATION: Duration = Duration::from_millis(3200);

/// AAC bitrate of HLS audio (the same as the live stream's).
const AUDIO_BITRATE: u64 = 128_000;

/// Content type of playlists.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// Content type of the init segment.
pub const INIT_CONTENT_TYPE: &str = "video/mp4";
/// Content type of media segments.
pub const SEGMENT_CONTENT_TYPE: &str = "video/iso.segment";

/// What a media playlist carries: a transcode at a quality, or the source's own streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HlsQuality {
    /// The source's H.264 (and AAC) cut at its keyframes, not re-encoded (`quality=original`).
    Original,
    /// A transcode at this quality.
    Transcode(Quality),
}

impl HlsQuality {
    /// The `quality=` value naming it: `original` or the height.
    pub fn param(self) -> String {
        match self {
            HlsQuality::Original => "original".to_owned(),
            HlsQuality::Transcode(q) => q.height().to_string(),
        }
    }
}

/// One entry of the master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The quality asked for (the `quality=` value of the media playlist).
    pub quality: HlsQuality,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Peak bit rate in bit/s (HLS `BANDWIDTH`).
    pub bandwidth: u64,
    /// Average bit rate in bit/s (HLS `AVERAGE-BANDWIDTH`).
    pub average_bandwidth: u64,
    /// Frame rate, if the source has a constant one.
    pub frame_rate: Option<f64>,
    /// RFC 6381 codecs, e.g. `avc1.42C02A,mp4a.40.2`.
    pub codecs: String,
}

/// The ladder for a source: every quality not taller than the source (at least the
/// smallest one, which then keeps the source size), with what its segments will carry,
/// then `original` when the source can be stream-copied (`copy`).
pub fn ladder(
    info: &MediaInfo,
    encoder: Encoder,
    has_aac_encoder: bool,
    copy: Option<&CopyIndex>,
) -> Vec<Variant> {
    let mut qualities: Vec<Quality> = Quality::ALL
        .into_iter()
        .filter(|q| q.height() <= info.height)
        .collect();
    if qualities.is_empty() {
        qualities.push(Quality::P240);
    }
    let audio = info.has_audio && has_aac_encoder;
    qualities
        .into_iter()
        .map(|quality| {
            let (width, height) = output_size(info.width, info.height, quality.height());
            let video = u64::from(Quality::for_output_height(height).video_bitrate_kbps()) * 1000;
            let audio_bps = if audio { AUDIO_BITRATE } else { 0 };
            // fMP4 boxes add about 2 %; a 3 s window of x264's average bitrate control can
            // run well above the target, so the peak is announced at twice the video rate.
            let average_bandwidth = (video + audio_bps) * 102 / 100;
            let bandwidth = 2 * video + audio_bps;
            let profile = h264_profile(encoder, height);
            let mut codecs = format!("avc1.{}{:02X}", profile.codec_hex, H264_LEVEL_IDC);
            if audio {
                codecs.push_str(",mp4a.40.2");
            }
            Variant {
                quality: HlsQuality::Transcode(quality),
                width,
                height,
                bandwidth,
                average_bandwidth,
                frame_rate: info.fps(),
                codecs,
            }
        })
        .chain(copy.map(|c| {
            let (width, height) = c.size();
            let (bandwidth, average_bandwidth) = c.bandwidth();
            Variant {
                quality: HlsQuality::Original,
                width,
                height,
                bandwidth,
                average_bandwidth,
                frame_rate: info.fps(),
                codecs: c.codecs.clone(),
            }
        }))
        .collect()
}

/// Where each segment of one quality is in a file holding them all: a background job's
/// rendition (`file.rs`), the init segment at offset 0, then every media segment in order.
/// Kept in the rendition's sidecar, so serving a segment from it is one ranged read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentIndex {
    /// [`crate::renditions::HLS_VERSION`] of the run that cut the file.
    pub version: String,
    /// [`SEGMENT_DURATION`] of that run, in ms.
    pub segment_ms: u64,
    /// Length of the init segment.
    pub init: u64,
    /// `[offset, length]` of each media segment; `None` for one the run did not produce.
    pub segments: Vec<Option<[u64; 2]>>,
}

impl SegmentIndex {
    /// An index of `count` media segments, none placed yet.
    pub(crate) fn new(count: u64) -> Self {
        SegmentIndex {
            version: crate::renditions::HLS_VERSION.to_owned(),
            segment_ms: SEGMENT_DURATION.as_millis() as u64,
            init: 0,
            segments: vec![None; count as usize],
        }
    }

    /// Records where segment `n` is.
    pub(crate) fn set(&mut self, n: u64, offset: u64, len: u64) {
        if let Some(slot) = self.segments.get_mut(n as usize) {
            *slot = Some([offset, len]);
        }
    }

    /// `(offset, length)` of segment `id`, if this index was cut by the running version's
    /// rules and holds it.
    pub fn range(&self, id: SegmentId) -> Option<(u64, u64)> {
        if self.version != crate::renditions::HLS_VERSION
            || self.segment_ms != SEGMENT_DURATION.as_millis() as u64
            || self.init == 0
        {
            return None;
        }
        match id {
            SegmentId::Init => Some((0, self.init)),
            SegmentId::Media(n) => self
                .segments
                .get(n as usize)
                .copied()
                .flatten()
                .map(|[o, l]| (o, l)),
        }
    }
}

/// Number of segments of a source of this duration (the last one may be shorter).
pub fn segment_count(duration: Duration) -> u64 {
    let seg = SEGMENT_DURATION.as_nanos();
    (duration.as_nanos().div_ceil(seg) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(w: u32, h: u32, audio: bool) -> MediaInfo {
        MediaInfo {
            duration: Some(Duration::from_secs(120)),
            width: w,
            height: h,
            frame_rate: Some((30, 1)),
            video_codec: Some("h264".into()),
            audio_codec: audio.then(|| "aac".into()),
            bitrate: None,
            container: Some("mp4".into()),
            has_video: true,
            has_audio: audio,
        }
    }

    #[test]
    fn ladder_never_above_source() {
        let l = ladder(&info(1920, 1080, true), Encoder::X264, true, None);
        assert_eq!(l.len(), 5);
        assert_eq!((l[0].width, l[0].height), (426, 240));
        assert_eq!(l[0].codecs, "avc1.64002A,mp4a.40.2");
        assert_eq!(l[4].codecs, "avc1.42C02A,mp4a.40.2");
        let l = ladder(&info(1280, 720, false), Encoder::X264, true, None);
        assert_eq!(l.len(), 4);
        assert_eq!(l[3].codecs, "avc1.42C02A");
        let l = ladder(&info(160, 90, true), Encoder::OpenH264, true, None);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].width, l[0].height), (160, 90));
    }

    #[test]
    fn segment_counts() {
        assert_eq!(segment_count(Duration::from_millis(3200)), 1);
        assert_eq!(segment_count(Duration::from_millis(3201)), 2);
        assert_eq!(segment_count(Duration::from_secs(120)), 38);
        assert_eq!(segment_count(Duration::ZERO), 1);
    }
}
