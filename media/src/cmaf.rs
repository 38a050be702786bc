//! What every HLS (CMAF) output is pinned to, whichever run of which pipeline produced it:
//! audio rate, H.264 profile and level, and keyframes on segment boundaries. A leaf under
//! both `pipeline.rs` (which builds the encoder chain) and `hls/` (which announces the
//! CODECS string and cuts the segments), so neither imports the other's rules.

use gst::prelude::*;

use crate::encoder::Encoder;
use crate::quality::Quality;

/// Audio sample rate of HLS output (see `hls::SEGMENT_DURATION`).
pub(crate) const AUDIO_RATE: u32 = 48_000;

/// H.264 level written by every encoder: 4.2 covers 1080p at 60 fps, the top of the ladder.
pub(crate) const H264_LEVEL: &str = "4.2";
/// `level_idc` of [`H264_LEVEL`] as it appears in the CODECS string.
pub(crate) const H264_LEVEL_IDC: u8 = 42;

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
