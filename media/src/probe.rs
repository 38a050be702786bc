//! Media information through GStreamer's Discoverer.

use std::path::Path;
use std::time::Duration;

use gst_pbutils::prelude::*;

use crate::MediaError;

/// Discoverer gives up after this long (its own timeout, so a stuck file cannot hang us).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `probe` found out about a file.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// Duration, if the container declares one.
    pub duration: Option<Duration>,
    /// Width of the first video stream in pixels (0 without video).
    pub width: u32,
    /// Height of the first video stream in pixels (0 without video).
    pub height: u32,
    /// Frame rate of the first video stream as (numerator, denominator); `None` without
    /// video or for variable frame rate.
    pub frame_rate: Option<(i32, i32)>,
    /// Short name of the video codec, ffprobe-style (`h264`, `hevc`, `vp9`, ...).
    pub video_codec: Option<String>,
    /// Short name of the audio codec, ffprobe-style (`aac`, `mp3`, `opus`, ...).
    pub audio_codec: Option<String>,
    /// Overall bitrate in bit/s (file size / duration), like ffprobe's format bit_rate.
    pub bitrate: Option<u64>,
    /// Container short name (`mp4`, `mov`, `matroska`, `webm`, `mpegts`, ...).
    pub container: Option<String>,
    /// The file has at least one video stream (still images count as video).
    pub has_video: bool,
    /// The file has at least one audio stream.
    pub has_audio: bool,
}

impl MediaInfo {
    /// Frame rate as a float, e.g. 29.97.
    pub fn fps(&self) -> Option<f64> {
        self.frame_rate.map(|(n, d)| f64::from(n) / f64::from(d))
    }
}

/// Probes `path`. Blocking (up to [`PROBE_TIMEOUT`]); `gst::init` must have been called.
pub(crate) fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    let size = std::fs::metadata(path)?.len();
    let path = std::path::absolute(path)?;
    let uri = gst::glib::filename_to_uri(&path, None)
        .map_err(|e| MediaError::Pipeline(format!("bad path {}: {e}", path.display())))?;
    let discoverer = gst_pbutils::Discoverer::new(gst::ClockTime::from_nseconds(
        PROBE_TIMEOUT.as_nanos() as u64,
    ))
    .map_err(|e| MediaError::Pipeline(format!("cannot create discoverer: {e}")))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| MediaError::NotMedia(e.message().to_string()))?;

    match info.result() {
        gst_pbutils::DiscovererResult::Ok | gst_pbutils::DiscovererResult::MissingPlugins => {}
        gst_pbutils::DiscovererResult::Timeout => {
            return Err(MediaError::Timeout(format!(
                "probing {} took more than {PROBE_TIMEOUT:?}",
                path.display()
            )));
        }
        other => {
            return Err(MediaError::NotMedia(format!(
                "discoverer result {other:?} for {}",
                path.display()
            )));
        }
    }

    let video = info.video_streams().into_iter().next();
    let audio = info.audio_streams().into_iter().next();
    if video.is_none() && audio.is_none() {
        return Err(MediaError::NotMedia(format!(
            "no audio or video stream in {}",
            path.display()
        )));
    }

    let duration = info
        .duration()
        .map(|d| Duration::from_nanos(d.nseconds()))
        .filter(|d| !d.is_zero());
    let bitrate = duration
        .filter(|d| d.as_secs_f64() > 0.0)
        .map(|d| (size as f64 * 8.0 / d.as_secs_f64()).round() as u64);
    let container = info
        .stream_info()
        .filter(|s| s.is::<gst_pbutils::DiscovererContainerInfo>())
        .and_then(|s| s.caps())
        .map(|caps| container_name(&caps));

    let (width, height, frame_rate) = match &video {
        Some(v) => {
            let fr = v.framerate();
            let frame_rate = (fr.numer() > 0 && fr.denom() > 0).then(|| (fr.numer(), fr.denom()));
            (v.width(), v.height(), frame_rate)
        }
        None => (0, 0, None),
    };

    Ok(MediaInfo {
        duration,
        width,
        height,
        frame_rate,
        video_codec: video
            .as_ref()
            .and_then(|v| v.caps())
            .map(|c| codec_name(&c)),
        audio_codec: audio
            .as_ref()
            .and_then(|a| a.caps())
            .map(|c| codec_name(&c)),
        bitrate,
        container,
        has_video: video.is_some(),
        has_audio: audio.is_some(),
    })
}

/// ffprobe-style codec name from stream caps; GStreamer's description otherwise.
fn codec_name(caps: &gst::Caps) -> String {
    let Some(s) = caps.structure(0) else {
        return "unknown".into();
    };
    let version = |field: &str| s.get::<i32>(field).unwrap_or(0);
    let name = match s.name().as_str() {
        "video/x-h264" => "h264",
        "video/x-h265" => "hevc",
        "video/x-vp8" => "vp8",
        "video/x-vp9" => "vp9",
        "video/x-av1" => "av1",
        "video/x-theora" => "theora",
        "video/x-divx" | "video/x-xvid" => "mpeg4",
        "video/mpeg" => match version("mpegversion") {
            4 => "mpeg4",
            2 => "mpeg2video",
            _ => "mpeg1video",
        },
        "image/jpeg" => "mjpeg",
        "image/png" => "png",
        "video/x-raw" => "rawvideo",
        "audio/mpeg" => match (version("mpegversion"), version("layer")) {
            (2 | 4, _) => "aac",
            (1, 3) => "mp3",
            (1, 2) => "mp2",
            _ => "mp1",
        },
        "audio/x-opus" => "opus",
        "audio/x-vorbis" => "vorbis",
        "audio/x-flac" => "flac",
        "audio/x-ac3" => "ac3",
        "audio/x-eac3" => "eac3",
        "audio/x-dts" => "dts",
        "audio/x-alac" => "alac",
        "audio/x-raw" => "pcm",
        _ => return gst_pbutils::pb_utils_get_codec_description(caps).to_string(),
    };
    name.to_string()
}

/// Short container name from container caps.
fn container_name(caps: &gst::Caps) -> String {
    let Some(s) = caps.structure(0) else {
        return "unknown".into();
    };
    let name = match s.name().as_str() {
        "video/quicktime" => match s.get::<&str>("variant").unwrap_or("iso") {
            "apple" => "mov",
            "3gpp" => "3gp",
            _ => "mp4",
        },
        "video/x-matroska" => "matroska",
        "video/webm" => "webm",
        "video/mpegts" => "mpegts",
        "video/x-msvideo" => "avi",
        "video/x-flv" => "flv",
        "application/ogg" => "ogg",
        "video/mpeg" => "mpeg",
        "video/x-ms-asf" => "asf",
        other => other,
    };
    name.to_string()
}
