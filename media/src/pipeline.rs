//! Building the transcode pipeline.
//!
//! The element chains are described once as [`ElemSpec`] lists; the same lists build the
//! real pipeline and render the `gst-launch-1.0` equivalent, so the benchmark compares
//! exactly the settings the gateway runs.
//!
//! Shape:
//! ```text
//! filesrc ! decodebin
//!   (video)  ! queue ! videoconvert ! videoscale ! video/x-raw,format,width,height,par=1/1
//!            ! <h264 encoder> ! h264parse ! queue ! mux.
//!   (audio)  ! queue ! audioconvert ! audioresample ! audio/x-raw,channels=2
//!            ! avenc_aac|voaacenc ! aacparse ! queue ! mux.
//! mp4mux (fragmented) ! appsink
//! ```
//! Branches are built in `pad-added` for the streams that exist: a mux pad requested for a
//! stream that never comes (audio-less source) makes mp4mux wait forever.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

use crate::MediaError;
use crate::encoder::Encoder;
use crate::quality::{Quality, output_size};

/// mp4mux fragment length for streams. 1 s gives the first 64 KiB in ~0.35 s in process
/// (measurements in the crate's README.md) while keeping moof overhead low.
const FRAGMENT_MS: u32 = 1000;
/// AAC bitrate for every quality.
const AUDIO_BITRATE: u32 = 128_000;
/// Keyframe interval in seconds: players and seeks can start at most this far apart.
const KEYFRAME_SECONDS: f64 = 2.0;

/// How the muxed output leaves the pipeline.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// Fragmented MP4 (moov first, then moof/mdat) into an appsink.
    Stream,
    /// Fragmented MP4 cut into HLS segments (see `hls/`): keyframes forced on segment
    /// boundaries, fixed track order, fixed H.264 profile and level, 48 kHz audio.
    Hls(HlsOutput),
}

/// What an HLS pipeline needs beyond the stream settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HlsOutput {
    /// Segment length in ns: keyframes are forced at every multiple of it (source timeline).
    pub segment_ns: u64,
    /// Where the run starts on the source timeline (a segment start); 0 needs no seek.
    pub start_ns: u64,
    /// Whether to mux an audio track (the source has one and an AAC encoder exists).
    pub audio: bool,
}

/// Settings shared by everything that builds a pipeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub encoder: Encoder,
    /// AAC encoder element, `None` if neither avenc_aac nor voaacenc is installed (audio is
    /// then left out of the output).
    pub aac: Option<&'static str>,
    pub quality: Quality,
}

/// One element with its properties, as strings (the form gst-launch uses).
#[derive(Debug, Clone)]
pub(crate) struct ElemSpec {
    factory: &'static str,
    props: Vec<(&'static str, String)>,
}

impl ElemSpec {
    pub(crate) fn new(factory: &'static str) -> Self {
        ElemSpec {
            factory,
            props: Vec::new(),
        }
    }

    pub(crate) fn prop(mut self, name: &'static str, value: impl ToString) -> Self {
        self.props.push((name, value.to_string()));
        self
    }

    pub(crate) fn caps(caps: String) -> Self {
        ElemSpec::new("capsfilter").prop("caps", caps)
    }

    /// Creates the element. Unknown properties or values are errors, not panics (the VA-API
    /// settings cannot be exercised on machines without a VA device).
    pub(crate) fn build(&self) -> Result<gst::Element, MediaError> {
        let element = make(self.factory)?;
        for (name, value) in &self.props {
            let pspec = element.find_property(name).ok_or_else(|| {
                MediaError::Pipeline(format!("`{}` has no property `{name}`", self.factory))
            })?;
            let value = gst::glib::Value::deserialize_with_pspec(value, &pspec).map_err(|_| {
                MediaError::Pipeline(format!(
                    "`{}` property `{name}` cannot be set to `{value}`",
                    self.factory
                ))
            })?;
            element.set_property(name, value);
        }
        Ok(element)
    }

    /// gst-launch syntax, one argv entry per token.
    fn launch_args(&self) -> Vec<String> {
        if self.factory == "capsfilter" {
            // gst-launch's short form for a capsfilter is the caps themselves.
            return self.props.iter().map(|(_, v)| v.clone()).collect();
        }
        let mut args = vec![self.factory.to_string()];
        args.extend(self.props.iter().map(|(k, v)| format!("{k}={v}")));
        args
    }
}

/// Creates an element by factory name, naming the package to install when it is missing.
pub(crate) fn make(factory: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MediaError::MissingElement {
            element: factory.to_string(),
            package: package_of(factory),
        })
}

fn package_of(factory: &str) -> &'static str {
    match factory {
        "filesrc" | "queue" | "capsfilter" | "fakesink" | "filesink" => "gstreamer1.0 core",
        "decodebin" | "videoconvert" | "videoscale" | "audioconvert" | "audioresample"
        | "appsink" => "gstreamer1.0-plugins-base",
        "mp4mux" | "aacparse" | "qtdemux" | "matroskademux" | "jpegenc" => {
            "gstreamer1.0-plugins-good"
        }
        "h264parse" | "voaacenc" | "openh264enc" | "tsdemux" => "gstreamer1.0-plugins-bad",
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "avenc_aac" => "gstreamer1.0-libav",
        "vaapih264enc" => "gstreamer1.0-vaapi",
        _ => "the GStreamer plugin providing it",
    }
}

/// Elements every pipeline needs, checked once at engine start so a broken install fails
/// early instead of on the first request.
pub(crate) const REQUIRED_ELEMENTS: &[&str] = &[
    "filesrc",
    "decodebin",
    "queue",
    "videoconvert",
    "videoscale",
    "capsfilter",
    "h264parse",
    "mp4mux",
    "appsink",
    "filesink",
    "fakesink",
    "audioconvert",
    "audioresample",
    "aacparse",
    "jpegenc",
];

/// Picks the AAC encoder: avenc_aac has rank none, so it must be named explicitly.
pub(crate) fn select_aac() -> Option<&'static str> {
    ["avenc_aac", "voaacenc"]
        .into_iter()
        .find(|name| gst::ElementFactory::find(name).is_some())
}

/// Keyframe interval in frames for a frame rate (`0/1` means variable: assume 30 fps).
fn key_int(fps_n: i32, fps_d: i32) -> u32 {
    key_int_for(fps_n, fps_d, KEYFRAME_SECONDS)
}

/// Frames in `seconds` at a frame rate (`0/1` means variable: assume 30 fps).
fn key_int_for(fps_n: i32, fps_d: i32, seconds: f64) -> u32 {
    let fps = if fps_n > 0 && fps_d > 0 {
        f64::from(fps_n) / f64::from(fps_d)
    } else {
        30.0
    };
    ((fps * seconds).round() as u32).clamp(1, 600)
}

/// Encoder element with rate control for the output size.
fn encoder_spec(encoder: Encoder, out_h: u32, key_int: u32, hls: bool) -> ElemSpec {
    // Settings follow the real output height, so a small source asked at 720 does not get
    // a 720p bitrate.
    let q = Quality::for_output_height(out_h);
    let kbps = q.video_bitrate_kbps();
    match encoder {
        Encoder::Vaapi => ElemSpec::new("vaapih264enc")
            .prop("rate-control", "cbr")
            .prop("bitrate", kbps)
            .prop("keyframe-period", key_int),
        Encoder::X264 => {
            let spec = ElemSpec::new("x264enc")
                .prop("speed-preset", q.x264_speed_preset())
                // No lookahead or B-frame delay: the first fragment leaves as early as possible.
                .prop("tune", "zerolatency")
                .prop("bitrate", kbps)
                .prop("key-int-max", key_int);
            if hls {
                // Keyframes come from force-key-unit events on segment starts; a scene-cut
                // keyframe in between would only cost bits.
                spec.prop("option-string", "scenecut=0")
            } else {
                spec
            }
        }
        Encoder::OpenH264 => ElemSpec::new("openh264enc")
            .prop("complexity", "low")
            .prop("rate-control", "bitrate")
            .prop("bitrate", kbps * 1000)
            .prop("gop-size", key_int),
    }
}

/// Video chain from the decoder pad to the mux pad.
fn video_chain(
    settings: &Settings,
    out_w: u32,
    out_h: u32,
    key_int: u32,
    hls: bool,
) -> Vec<ElemSpec> {
    let mut chain = vec![
        ElemSpec::new("queue"),
        ElemSpec::new("videoconvert"),
        ElemSpec::new("videoscale"),
        // Width, height and PAR all fixed: height alone gives anamorphic or odd-width output.
        ElemSpec::caps(format!(
            "video/x-raw,format={},width={out_w},height={out_h},pixel-aspect-ratio=1/1",
            settings.encoder.input_format()
        )),
        encoder_spec(settings.encoder, out_h, key_int, hls),
        ElemSpec::new("h264parse"),
        ElemSpec::new("queue"),
    ];
    if hls {
        // The master playlist announces the CODECS string before anything is encoded, and
        // every restart must give the same init segment: pin profile and level.
        let profile = crate::cmaf::h264_profile(settings.encoder, out_h);
        chain.insert(
            5,
            ElemSpec::caps(format!(
                "video/x-h264,profile={},level=(string){}",
                profile.caps_name,
                crate::cmaf::H264_LEVEL
            )),
        );
    }
    chain
}

/// Audio chain from the decoder pad to the mux pad.
fn audio_chain(aac: &'static str, hls: bool) -> Vec<ElemSpec> {
    // Stereo keeps AAC-LC playable everywhere; multichannel sources are downmixed. HLS
    // audio is always 48 kHz so a segment holds a whole number of AAC frames (hls/mod.rs).
    let caps = if hls {
        format!("audio/x-raw,channels=2,rate={}", crate::cmaf::AUDIO_RATE)
    } else {
        "audio/x-raw,channels=2".to_string()
    };
    let mut encoder = ElemSpec::new(aac).prop("bitrate", AUDIO_BITRATE);
    if hls {
        // AAC frames exactly 1024 samples apart from the run's start, whatever jitter the
        // source timestamps have (Matroska rounds them to 1 ms): fragments then end on
        // segment boundaries and runs meet without a gap or an overlap.
        encoder = encoder.prop("perfect-timestamp", true);
    }
    vec![
        ElemSpec::new("queue"),
        ElemSpec::new("audioconvert"),
        ElemSpec::new("audioresample"),
        ElemSpec::caps(caps),
        encoder,
        ElemSpec::new("aacparse"),
        ElemSpec::new("queue"),
    ]
}

fn mux_spec(output: &Output) -> ElemSpec {
    match output {
        Output::Stream => ElemSpec::new("mp4mux")
            .prop("fragment-duration", FRAGMENT_MS)
            .prop("streamable", true),
        // A video fragment starts at every keyframe; audio fragments are one segment long,
        // so they too end on segment boundaries.
        Output::Hls(hls) => ElemSpec::new("mp4mux")
            .prop("fragment-duration", hls.segment_ns / 1_000_000)
            // Never try to go back and rewrite the header: the appsink cannot seek.
            .prop("streamable", true),
    }
}

/// What the `pad-added` handler found, read by the caller after preroll or at the end.
#[derive(Debug, Default)]
pub(crate) struct BranchState {
    /// A video pad has been taken (only the first video stream is transcoded).
    pub video_claimed: bool,
    /// Output width and height, once the video branch exists.
    pub video: Option<(u32, u32)>,
    pub audio: bool,
    /// Set by `no-more-pads` when the source has no decodable video stream.
    pub no_video: bool,
    /// `no-more-pads` has fired: every branch exists (an HLS run seeks then).
    pub all_pads: bool,
    /// HLS: source-timeline position (ns) of the first buffer reaching each mux pad, which
    /// anchors the fragments' decode times (`tfdt`) on the source timeline.
    pub first_video_ns: Option<u64>,
    /// Same as `first_video_ns`, for the audio track.
    pub first_audio_ns: Option<u64>,
}

/// A built (not yet started) pipeline.
pub(crate) struct Built {
    pub pipeline: gst::Pipeline,
    /// Where an HLS run's seek is sent (see [`Built::seek`]).
    pub decodebin: gst::Element,
    /// The appsink.
    pub sink: gst::Element,
    pub state: Arc<Mutex<BranchState>>,
    /// Stream time of the last frame that reached the video encoder, in ns (for progress).
    pub video_pts: Arc<AtomicU64>,
}

/// Builds the pipeline for `src`; branches are added when decodebin exposes its pads.
pub(crate) fn build(settings: Settings, src: &Path, output: Output) -> Result<Built, MediaError> {
    let pipeline = gst::Pipeline::new();
    let filesrc = ElemSpec::new("filesrc")
        .prop("location", src.display())
        .build()?;
    let decodebin = make("decodebin")?;
    let mux = mux_spec(&output).build()?;
    // Bounded queue and no dropping: a slow reader blocks the pipeline instead of growing
    // memory. No clock sync: transcode as fast as the reader takes it.
    let sink = gst_app::AppSink::builder()
        .max_buffers(8)
        .drop(false)
        .sync(false)
        .build()
        .upcast::<gst::Element>();
    pipeline
        .add_many([&filesrc, &decodebin, &mux, &sink])
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    filesrc
        .link(&decodebin)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    mux.link(&sink)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;

    let state = Arc::new(Mutex::new(BranchState::default()));
    let video_pts = Arc::new(AtomicU64::new(0));
    let hls = match &output {
        Output::Hls(hls) => Some(*hls),
        _ => None,
    };
    // HLS requests its mux pads up front, video first: the track order (and so the init
    // segment) is then the same on every run, whichever stream decodebin exposes first.
    let mux_pads = match hls {
        Some(hls) => {
            let video = request_mux_pad(&mux, "video_%u")?;
            // mp4mux would pick the frame rate as timescale (25 for 25 fps): too coarse
            // for decode times anchored on the source timeline (a start offset, VFR).
            video.set_property("trak-timescale", 90_000u32);
            let audio = match (hls.audio, settings.aac) {
                (true, Some(_)) => Some(request_mux_pad(&mux, "audio_%u")?),
                _ => None,
            };
            record_first_buffer(&video, state.clone(), true);
            if let Some(audio) = &audio {
                record_first_buffer(audio, state.clone(), false);
            }
            Some(MuxPads { video, audio })
        }
        None => None,
    };

    {
        let state = state.clone();
        let video_pts = video_pts.clone();
        // The handler holds the mux strongly (no cycle: the mux does not reference
        // decodebin) and finds the pipeline through decodebin's parent.
        decodebin.connect_pad_added(move |dbin, pad| {
            let ctx = PadContext {
                mux: &mux,
                mux_pads: mux_pads.as_ref(),
                hls,
                settings,
                state: &state,
                video_pts: &video_pts,
            };
            let result = on_pad_added(dbin, pad, &ctx);
            if let Err(err) = result {
                gst::element_error!(
                    dbin,
                    gst::CoreError::Negotiation,
                    ("failed to build transcode branch: {}", err)
                );
            }
        });
    }
    {
        let state = state.clone();
        decodebin.connect_no_more_pads(move |dbin| {
            let mut st = state.lock().unwrap();
            st.all_pads = true;
            if !st.video_claimed {
                st.no_video = true;
                drop(st);
                // An error stops the pipeline right away; otherwise an audio-only source
                // would be transcoded into an audio-only "video".
                gst::element_error!(
                    dbin,
                    gst::StreamError::WrongType,
                    ("source has no decodable video stream")
                );
            }
        });
    }

    Ok(Built {
        pipeline,
        decodebin,
        sink,
        state,
        video_pts,
    })
}

impl Built {
    /// Seeks the source to `ns` (flushing, accurate), upstream from decodebin's pads, so the
    /// demuxer gets it without going through the muxer: mp4mux's output is in bytes, and a
    /// time seek passing it is a GLib CRITICAL on GStreamer 1.22. One pad is enough, the
    /// demuxer flushes and moves all its streams.
    pub fn seek(&self, ns: u64) -> bool {
        let event = gst::event::Seek::new(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::SeekType::Set,
            gst::ClockTime::from_nseconds(ns),
            gst::SeekType::None,
            gst::ClockTime::NONE,
        );
        self.decodebin
            .src_pads()
            .first()
            .is_some_and(|pad| pad.send_event(event))
    }
}

/// What a new decoder pad is used for.
enum Role {
    Video,
    Audio(&'static str),
    Discard,
}

/// HLS mux pads, requested before any stream is known.
struct MuxPads {
    video: gst::Pad,
    audio: Option<gst::Pad>,
}

/// Everything the `pad-added` handler works with.
struct PadContext<'a> {
    mux: &'a gst::Element,
    mux_pads: Option<&'a MuxPads>,
    hls: Option<HlsOutput>,
    settings: Settings,
    state: &'a Mutex<BranchState>,
    video_pts: &'a Arc<AtomicU64>,
}

fn request_mux_pad(mux: &gst::Element, template: &str) -> Result<gst::Pad, MediaError> {
    mux.request_pad_simple(template)
        .ok_or_else(|| MediaError::Pipeline(format!("mp4mux refused pad {template}")))
}

fn on_pad_added(
    dbin: &gst::Element,
    pad: &gst::Pad,
    ctx: &PadContext<'_>,
) -> Result<(), MediaError> {
    let PadContext {
        mux,
        settings,
        state,
        video_pts,
        ..
    } = *ctx;
    let bin = dbin
        .parent()
        .and_downcast::<gst::Bin>()
        .ok_or_else(|| MediaError::Pipeline("decodebin has no parent bin".into()))?;
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let structure = caps
        .structure(0)
        .ok_or_else(|| MediaError::Pipeline("decoder pad has empty caps".into()))?;
    let media = structure.name().as_str();

    // Claim the role under the lock, build without it (state changes below may take time).
    let role = {
        let mut st = state.lock().unwrap();
        if media.starts_with("video/") && !st.video_claimed {
            st.video_claimed = true;
            Role::Video
        } else if let (true, false, Some(aac), true) = (
            media.starts_with("audio/"),
            st.audio,
            settings.aac,
            ctx.mux_pads.is_none_or(|p| p.audio.is_some()),
        ) {
            st.audio = true;
            Role::Audio(aac)
        } else {
            Role::Discard
        }
    };

    match role {
        Role::Video => {
            let width = structure.get::<i32>("width").unwrap_or(0).max(0) as u32;
            let height = structure.get::<i32>("height").unwrap_or(0).max(0) as u32;
            if width == 0 || height == 0 {
                return Err(MediaError::Pipeline(format!(
                    "video pad without size: {caps}"
                )));
            }
            // Non-square pixels (DV, some DVB): scale to the display aspect ratio.
            let par = structure
                .get::<gst::Fraction>("pixel-aspect-ratio")
                .unwrap_or(gst::Fraction::new(1, 1));
            let display_w = if par.numer() > 0 && par.denom() > 0 {
                (u64::from(width) * par.numer() as u64 / par.denom() as u64) as u32
            } else {
                width
            };
            let fps = structure
                .get::<gst::Fraction>("framerate")
                .unwrap_or(gst::Fraction::new(0, 1));
            let (out_w, out_h) = output_size(display_w, height, settings.quality.height());
            let key_frames = match ctx.hls {
                // Forced keyframes do the work; this only bounds a segment longer than planned.
                Some(hls) => {
                    key_int_for(fps.numer(), fps.denom(), 2.0 * hls.segment_ns as f64 / 1e9)
                }
                None => key_int(fps.numer(), fps.denom()),
            };
            let chain = video_chain(&settings, out_w, out_h, key_frames, ctx.hls.is_some());
            let mux_pad = match ctx.mux_pads {
                Some(pads) => pads.video.clone(),
                None => request_mux_pad(mux, "video_%u")?,
            };
            if let Some(hls) = ctx.hls {
                gate_until_seeked(pad, hls, true);
            }
            let elements = add_chain(&bin, &chain, &mux_pad, pad)?;
            crate::note_encoder_started();
            let encoder = elements.iter().find(|e| {
                e.factory()
                    .is_some_and(|f| f.name() == settings.encoder.element_name())
            });
            if let Some(enc_sink) = encoder.and_then(|e| e.static_pad("sink")) {
                record_stream_time(&enc_sink, video_pts.clone());
                if let Some(hls) = ctx.hls {
                    crate::cmaf::force_segment_keyframes(&enc_sink, hls.segment_ns);
                }
            }
            state.lock().unwrap().video = Some((out_w, out_h));
            tracing::debug!(%caps, out_w, out_h, "video branch linked");
        }
        Role::Audio(aac) => {
            let mux_pad = match ctx.mux_pads.and_then(|p| p.audio.clone()) {
                Some(pad) => pad,
                None => request_mux_pad(mux, "audio_%u")?,
            };
            let elements = add_chain(&bin, &audio_chain(aac, ctx.hls.is_some()), &mux_pad, pad)?;
            // After audioconvert: interleaved samples, which the gate can trim.
            if let (Some(hls), Some(resample)) = (ctx.hls, elements.get(2)) {
                let sink = resample
                    .static_pad("sink")
                    .expect("audioresample has a sink pad");
                gate_until_seeked(&sink, hls, false);
            }
            tracing::debug!(%caps, "audio branch linked");
        }
        Role::Discard => {
            // Extra streams (second audio track, subtitles) go to a fakesink: an unlinked
            // decodebin pad can stall or fail the whole pipeline.
            let sink = ElemSpec::new("fakesink")
                .prop("sync", false)
                .prop("async", false)
                .build()?;
            bin.add(&sink)
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            sink.sync_state_with_parent()
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            link_pads(pad, &sink)?;
            tracing::debug!(%caps, "extra stream discarded");
        }
    }
    Ok(())
}

/// Stores the stream time of each buffer passing `pad` into `out` (ns), for progress.
///
/// Used on the encoder's input, not its output: x264enc shifts output timestamps by
/// 1000 hours (room for negative DTS). The segment conversion handles sources whose
/// timestamps do not start at zero.
fn record_stream_time(pad: &gst::Pad, out: Arc<AtomicU64>) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
            let stream_time = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|ev| {
                    ev.segment()
                        .downcast_ref::<gst::ClockTime>()
                        .and_then(|seg| seg.to_stream_time(pts))
                })
                .unwrap_or(pts);
            out.store(stream_time.nseconds(), Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
}

/// HLS runs that start past 0 seek once every branch exists, to a little before their
/// first segment; everything before that segment's start is dropped here, so encoders and
/// muxer only see the stream from the run's start, cut exactly where a run from further
/// back forced its keyframe: video at the first frame at or after the start, audio at the
/// sample (the buffer spanning the start is trimmed; `pad` must carry interleaved raw audio).
///
/// Buffers are dropped by returning `Handled`, not `Drop`: gstreamer-rs hands the probe the
/// buffer and clears the pad's pointer to it, and GStreamer 1.22 (Debian 12) then unrefs that
/// NULL pointer after a `Drop` (a GLib CRITICAL per buffer); after `Handled` it does not.
fn gate_until_seeked(pad: &gst::Pad, hls: HlsOutput, video: bool) {
    if hls.start_ns == 0 {
        return;
    }
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_FLUSH,
        move |pad, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                if ev.type_() == gst::EventType::FlushStop {
                    open.store(true, Ordering::SeqCst);
                }
                return gst::PadProbeReturn::Ok;
            }
            if !open.load(Ordering::SeqCst) {
                return gst::PadProbeReturn::Handled;
            }
            let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(segment) = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|ev| ev.segment().downcast_ref::<gst::ClockTime>().cloned())
            else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(pts) = buffer.pts() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(start) = segment.to_stream_time(pts).map(|t| t.nseconds()) else {
                return gst::PadProbeReturn::Ok;
            };
            let end = start + buffer.duration().map_or(0, |d| d.nseconds());
            if video {
                return if start + SLACK_NS < hls.start_ns {
                    gst::PadProbeReturn::Handled
                } else {
                    gst::PadProbeReturn::Remove
                };
            }
            if end <= hls.start_ns {
                return gst::PadProbeReturn::Handled;
            }
            if start < hls.start_ns {
                match trim_audio_front(pad, buffer, hls.start_ns - start) {
                    Some(trimmed) => *buffer = trimmed,
                    None => return gst::PadProbeReturn::Handled,
                }
            }
            gst::PadProbeReturn::Remove
        },
    );
}

/// `buffer` without its first `ns` of interleaved raw audio.
fn trim_audio_front(pad: &gst::Pad, buffer: &gst::Buffer, ns: u64) -> Option<gst::Buffer> {
    let info = gst_audio::AudioInfo::from_caps(pad.current_caps()?.as_ref()).ok()?;
    let frames = (u128::from(ns) * u128::from(info.rate()) / 1_000_000_000) as usize;
    let bytes = frames * info.bpf() as usize;
    if bytes >= buffer.size() {
        return None;
    }
    let mut out = buffer
        .copy_region(
            gst::BufferCopyFlags::MEMORY | gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::META,
            bytes..,
        )
        .ok()?;
    let cut = gst::ClockTime::from_nseconds(
        (frames as u64).mul_div_floor(1_000_000_000, u64::from(info.rate()))?,
    );
    let out_mut = out.make_mut();
    out_mut.set_pts(buffer.pts().map(|p| p + cut));
    out_mut.set_duration(buffer.duration().map(|d| d.saturating_sub(cut)));
    Some(out)
}

/// Timestamps this close below a segment start count as on it (rounding).
const SLACK_NS: u64 = 500_000;

/// Notes the source-timeline position of the first buffer reaching an HLS mux pad.
fn record_first_buffer(pad: &gst::Pad, state: Arc<Mutex<BranchState>>, video: bool) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(ts) = buffer.dts().or(buffer.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let stream_time = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|ev| {
                ev.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|seg| seg.to_stream_time(ts))
            })
            .unwrap_or(ts);
        let mut st = state.lock().unwrap();
        let slot = if video {
            &mut st.first_video_ns
        } else {
            &mut st.first_audio_ns
        };
        slot.get_or_insert(stream_time.nseconds());
        gst::PadProbeReturn::Remove
    });
}

/// Adds `chain` to `bin`, links it from `src_pad` to `mux_pad` and starts it.
fn add_chain(
    bin: &gst::Bin,
    chain: &[ElemSpec],
    mux_pad: &gst::Pad,
    src_pad: &gst::Pad,
) -> Result<Vec<gst::Element>, MediaError> {
    let elements = chain
        .iter()
        .map(ElemSpec::build)
        .collect::<Result<Vec<_>, _>>()?;
    bin.add_many(&elements)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    gst::Element::link_many(&elements).map_err(|e| MediaError::Pipeline(e.to_string()))?;
    let last = elements.last().expect("chains are never empty");
    last.static_pad("src")
        .expect("chain elements have a src pad")
        .link(mux_pad)
        .map_err(|e| MediaError::Pipeline(format!("linking to mp4mux: {e:?}")))?;
    // Downstream first, so no element pushes into one that is still stopped.
    for element in elements.iter().rev() {
        element
            .sync_state_with_parent()
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    }
    link_pads(src_pad, &elements[0])?;
    Ok(elements)
}

fn link_pads(src_pad: &gst::Pad, element: &gst::Element) -> Result<(), MediaError> {
    let sink_pad = element
        .static_pad("sink")
        .expect("chain heads have a sink pad");
    src_pad
        .link(&sink_pad)
        .map(|_| ())
        .map_err(|e| MediaError::Pipeline(format!("linking decoder pad: {e:?}")))
}

/// Turns a bus error into a [`MediaError`], keeping GStreamer's message and debug text.
pub(crate) fn map_bus_error(err: &gst::message::Error, state: &Mutex<BranchState>) -> MediaError {
    let gerr = err.error();
    let source = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    let debug = err.debug().map(|d| d.to_string()).unwrap_or_default();
    let text = if debug.is_empty() {
        format!("{} (from {source})", gerr.message())
    } else {
        format!("{} (from {source}: {debug})", gerr.message())
    };
    let no_video = state.lock().map(|s| s.no_video).unwrap_or(false);
    if no_video
        || gerr.matches(gst::StreamError::TypeNotFound)
        || gerr.matches(gst::StreamError::WrongType)
    {
        MediaError::NotVideo(text)
    } else {
        MediaError::Pipeline(text)
    }
}

/// Owns a running pipeline: sets it to NULL when dropped, whatever the exit path, so no
/// streaming thread outlives its request, and keeps the engine's active count right.
pub(crate) struct Running {
    pub pipeline: gst::Pipeline,
    active: Arc<AtomicUsize>,
}

impl Running {
    pub(crate) fn new(pipeline: gst::Pipeline, active: Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Running { pipeline, active }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // NULL joins the streaming threads; it is quick once nothing blocks downstream
        // (the appsink reader has been dropped or stopped pulling).
        let _ = self.pipeline.set_state(gst::State::Null);
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the gst-launch helper needs to know about the source (from `probe`).
pub(crate) struct LaunchSource<'a> {
    pub path: &'a Path,
    pub width: u32,
    pub height: u32,
    pub fps: (i32, i32),
    pub has_audio: bool,
}

/// gst-launch-1.0 arguments (without the program name) for the streaming pipeline, with
/// the fragmented MP4 written to `dest` instead of an appsink.
pub(crate) fn launch_args(settings: Settings, src: &LaunchSource<'_>, dest: &Path) -> Vec<String> {
    let (out_w, out_h) = output_size(src.width, src.height, settings.quality.height());
    let mut args = Vec::new();
    let push_chain = |args: &mut Vec<String>, specs: &[ElemSpec]| {
        for (i, spec) in specs.iter().enumerate() {
            if i > 0 {
                args.push("!".into());
            }
            args.extend(spec.launch_args());
        }
    };
    push_chain(
        &mut args,
        &[
            ElemSpec::new("filesrc").prop("location", src.path.display()),
            ElemSpec::new("decodebin").prop("name", "d"),
        ],
    );
    // The caps after `d.` make delayed linking pick the right decoder pad; a bare queue
    // accepts any caps and could take the audio pad.
    args.extend(["d.".into(), "!".into(), "video/x-raw".into(), "!".into()]);
    push_chain(
        &mut args,
        &video_chain(
            &settings,
            out_w,
            out_h,
            key_int(src.fps.0, src.fps.1),
            false,
        ),
    );
    args.extend(["!".into(), "mux.".into()]);
    if let (true, Some(aac)) = (src.has_audio, settings.aac) {
        args.extend(["d.".into(), "!".into(), "audio/x-raw".into(), "!".into()]);
        push_chain(&mut args, &audio_chain(aac, false));
        args.extend(["!".into(), "mux.".into()]);
    }
    push_chain(
        &mut args,
        &[
            mux_spec(&Output::Stream).prop("name", "mux"),
            ElemSpec::new("filesink").prop("location", dest.display()),
        ],
    );
    args
}

/// Quotes an argument for a POSIX shell when needed.
pub(crate) fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=,:%+@".contains(c);
    if arg == "!" || (!arg.is_empty() && arg.chars().all(safe)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_int_is_two_seconds() {
        assert_eq!(key_int(30, 1), 60);
        assert_eq!(key_int(30000, 1001), 60);
        assert_eq!(key_int(25, 1), 50);
        assert_eq!(key_int(0, 1), 60);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("location=/a/b.mp4"), "location=/a/b.mp4");
        assert_eq!(shell_quote("d."), "d.");
        assert_eq!(shell_quote("location=/a b"), "'location=/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("!"), "!");
    }
}
