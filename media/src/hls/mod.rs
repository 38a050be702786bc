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
//! - every fragment's decode time (`tfdt`) is rewritten to its position on the source
//!   timeline, anchored on the first buffer each mux pad received (`fmp4.rs`);
//! - profile, level, track order, audio rate and channel count are pinned, so the init
//!   segment of any run describes every run's segments.

mod fmp4;
mod playlist;
mod session;
mod sessions;

use std::time::Duration;

use gst::prelude::*;

use crate::encoder::Encoder;
use crate::probe::MediaInfo;
use crate::quality::{Quality, output_size};

pub use playlist::{master_playlist, media_playlist};
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

/// Audio sample rate of HLS output (see [`SEGMENT_DURATION`]).
pub(crate) const AUDIO_RATE: u32 = 48_000;

/// H.264 level written by every encoder: 4.2 covers 1080p at 60 fps, the top of the ladder.
pub(crate) const H264_LEVEL: &str = "4.2";
/// `level_idc` of [`H264_LEVEL`] as it appears in the CODECS string.
const H264_LEVEL_IDC: u8 = 42;

/// AAC bitrate of HLS audio (the same as the live stream's).
const AUDIO_BITRATE: u64 = 128_000;

/// Content type of playlists.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// Content type of the init segment.
pub const INIT_CONTENT_TYPE: &str = "video/mp4";
/// Content type of media segments.
pub const SEGMENT_CONTENT_TYPE: &str = "video/iso.segment";

/// H.264 profile the encoder is pinned to, as caps name and as CODECS hex.
pub(crate) struct H264Profile {
    pub caps_name: &'static str,
    /// `profile_idc` and constraint flags, e.g. `42C0` for Constrained Baseline.
    pub codec_hex: &'static str,
}

const CONSTRAINED_BASELINE: H264Profile = H264Profile {
    caps_name: "constrained-baseline",
    codec_hex: "42C0",
};
const HIGH: H264Profile = H264Profile {
    caps_name: "high",
    codec_hex: "6400",
};

/// The profile an encoder produces at an output height: x264's `ultrafast` (720p and up)
/// only has Constrained Baseline tools, `superfast` uses High; OpenH264 is Constrained
/// Baseline; VA-API is asked for High.
pub(crate) fn h264_profile(encoder: Encoder, out_h: u32) -> H264Profile {
    match encoder {
        Encoder::X264 => match Quality::for_output_height(out_h).x264_speed_preset() {
            "ultrafast" => CONSTRAINED_BASELINE,
            _ => HIGH,
        },
        Encoder::OpenH264 => CONSTRAINED_BASELINE,
        Encoder::Vaapi => HIGH,
    }
}

/// One entry of the master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The quality asked for (the `quality=` value of the media playlist).
    pub quality: Quality,
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
/// smallest one, which then keeps the source size), with what its segments will carry.
pub fn ladder(info: &MediaInfo, encoder: Encoder, has_aac_encoder: bool) -> Vec<Variant> {
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
                quality,
                width,
                height,
                bandwidth,
                average_bandwidth,
                frame_rate: info.fps(),
                codecs,
            }
        })
        .collect()
}

/// Number of segments of a source of this duration (the last one may be shorter).
pub fn segment_count(duration: Duration) -> u64 {
    let seg = SEGMENT_DURATION.as_nanos();
    (duration.as_nanos().div_ceil(seg) as u64).max(1)
}

/// Sends a force-key-unit event into the encoder before the first frame at or after each
/// segment start, so every segment starts with an IDR frame at any frame rate (also
/// variable) and with any encoder built on GstVideoEncoder.
pub(crate) fn force_segment_keyframes(encoder_sink: &gst::Pad, segment_ns: u64) {
    // Next boundary to force, in source-timeline ns (0: force the first frame).
    let next = std::sync::Mutex::new(0u64);
    // Timestamps of frames at exactly a boundary may be a rounding step below it.
    const SLACK_NS: u64 = 500_000;
    encoder_sink.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(segment) = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|ev| ev.segment().downcast_ref::<gst::ClockTime>().cloned())
        else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(stream_time) = segment.to_stream_time(pts) else {
            return gst::PadProbeReturn::Ok;
        };
        let at = stream_time.nseconds();
        let mut next = next.lock().unwrap();
        if at + SLACK_NS >= *next {
            *next = ((at + SLACK_NS) / segment_ns + 1) * segment_ns;
            // No running time: "the next frame", which is this buffer (the event is
            // serialized on our own streaming thread). A running time would be compared
            // with x264enc's shifted output timeline and match only the first frame.
            let event = gst_video::DownstreamForceKeyUnitEvent::builder()
                .timestamp(pts)
                .stream_time(stream_time)
                .all_headers(true)
                .build();
            pad.send_event(event);
        }
        gst::PadProbeReturn::Ok
    });
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
        let l = ladder(&info(1920, 1080, true), Encoder::X264, true);
        assert_eq!(l.len(), 5);
        assert_eq!((l[0].width, l[0].height), (426, 240));
        assert_eq!(l[0].codecs, "avc1.64002A,mp4a.40.2");
        assert_eq!(l[4].codecs, "avc1.42C02A,mp4a.40.2");
        let l = ladder(&info(1280, 720, false), Encoder::X264, true);
        assert_eq!(l.len(), 4);
        assert_eq!(l[3].codecs, "avc1.42C02A");
        let l = ladder(&info(160, 90, true), Encoder::OpenH264, true);
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
