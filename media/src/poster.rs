//! Posters: one JPEG still taken from a video at a chosen moment.
//!
//! Shape:
//! ```text
//! filesrc ! decodebin
//!   (first video) ! queue ! videoconvert ! videoscale
//!                 ! video/x-raw,format=RGB,width,height,pixel-aspect-ratio=1/1
//!                 ! jpegenc ! appsink
//!   (other pads)  ! fakesink
//! ```
//! The pipeline prerolls in PAUSED (the first frame reaches the appsink), is seeked with a
//! flushing, accurate seek to the asked moment and prerolls again: the decoder drops the
//! frames between the keyframe and the target, so the preroll sample is the frame shown at
//! that moment. Nothing is ever played, so no clock and no audio output are involved.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use crate::MediaError;
use crate::pipeline::{self, BranchState, ElemSpec, Running};

/// Widest poster that can be asked for.
pub const MAX_POSTER_WIDTH: u32 = 1280;
/// Content type of [`Poster::jpeg`].
pub const POSTER_CONTENT_TYPE: &str = "image/jpeg";
/// The element that encodes posters (told as a stored poster's encoder).
pub(crate) const POSTER_ENCODER: &str = "jpegenc";
/// Where a poster is taken when no moment is asked for: this fraction of the duration.
/// The first frames are often black or a title card.
const DEFAULT_AT_FRACTION: f64 = 0.1;
/// The whole grab (type detection, two prerolls) must finish in this time. A long GOP
/// at 4K can mean decoding a few seconds of frames to reach an accurate target.
const POSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// A seek this close to the end could land after the last frame (no frame at all), so the
/// moment is kept at least this far before the end.
const END_MARGIN: Duration = Duration::from_millis(200);
/// jpegenc quality (0-100); its default is 85, a little heavy for thumbnails.
const JPEG_QUALITY: u32 = 80;

/// A JPEG still from a video.
#[derive(Clone, PartialEq, Eq)]
pub struct Poster {
    /// The JPEG file's bytes.
    pub jpeg: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Position of the frame on the source's timeline.
    pub at: Duration,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("bytes", &self.jpeg.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .field("at", &self.at)
            .finish()
    }
}

/// Size of a poster `want_w` wide from a `width`x`height` source with pixel aspect ratio
/// `par` (numerator, denominator): the display aspect ratio is kept, the height is even,
/// and nothing is made larger than the source shows it.
pub fn poster_size(width: u32, height: u32, par: (i32, i32), want_w: u32) -> (u32, u32) {
    let display_w = match par {
        (n, d) if n > 0 && d > 0 => (u64::from(width) * n as u64 / d as u64) as u32,
        _ => width,
    }
    .max(1);
    let out_w = want_w.clamp(1, display_w);
    let exact_h = f64::from(out_w) * f64::from(height) / f64::from(display_w);
    let mut out_h = 2 * (exact_h / 2.0).round() as u32;
    if out_h > height {
        out_h -= 2;
    }
    (out_w, out_h.max(2))
}

/// Where the poster of a video of this duration is taken when no moment is asked for (10 %
/// in, kept inside the duration; zero when the duration is unknown): what `?thumbnail=W`
/// alone shows.
pub fn default_poster_moment(duration: Option<Duration>) -> Duration {
    poster_moment(None, duration)
}

/// Where a poster is taken: `at` (or 10 % in) kept inside the duration when it is known.
pub(crate) fn poster_moment(at: Option<Duration>, duration: Option<Duration>) -> Duration {
    let wanted = match (at, duration) {
        (Some(at), _) => at,
        (None, Some(d)) => d.mul_f64(DEFAULT_AT_FRACTION),
        (None, None) => Duration::ZERO,
    };
    match duration {
        Some(d) => wanted.min(d.saturating_sub(END_MARGIN)),
        None => wanted,
    }
}

/// Takes the poster. Blocking, bounded by [`POSTER_TIMEOUT`].
pub(crate) fn grab(
    src: &Path,
    width: u32,
    at: Option<Duration>,
    active: Arc<AtomicUsize>,
) -> Result<Poster, MediaError> {
    if !(1..=MAX_POSTER_WIDTH).contains(&width) {
        return Err(MediaError::InvalidPoster(format!(
            "width {width} is not between 1 and {MAX_POSTER_WIDTH}"
        )));
    }
    let deadline = Instant::now() + POSTER_TIMEOUT;
    let (pipeline, appsink, state) = build(src, width)?;
    // From here on, any return drops `running`, which sets the pipeline to NULL.
    let running = Running::new(pipeline, active);
    let bus = running.pipeline.bus().expect("pipelines have a bus");

    if running.pipeline.set_state(gst::State::Paused).is_err() {
        return Err(wait_async_done(&bus, &state, deadline)
            .err()
            .unwrap_or_else(|| MediaError::Pipeline("pipeline refused to preroll".into())));
    }
    wait_async_done(&bus, &state, deadline)?;
    if state.lock().unwrap().video.is_none() {
        return Err(MediaError::NotVideo("no video stream found".into()));
    }

    let duration = running
        .pipeline
        .query_duration::<gst::ClockTime>()
        .map(|d| Duration::from_nanos(d.nseconds()))
        .filter(|d| !d.is_zero());
    let target = poster_moment(at, duration);
    if !target.is_zero() {
        running
            .pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::from_nseconds(target.as_nanos() as u64),
            )
            .map_err(|_| MediaError::Pipeline(format!("cannot seek to {target:?}")))?;
        wait_async_done(&bus, &state, deadline)?;
    }

    let sample = appsink
        .try_pull_preroll(gst::ClockTime::from_mseconds(100))
        .ok_or_else(|| MediaError::Pipeline(format!("no frame at {target:?}")))?;
    let poster = to_poster(&sample, target)?;
    tracing::debug!(src = %src.display(), ?poster, "poster taken");
    Ok(poster)
}

/// Copies the JPEG out of the sample and reads its size and position.
fn to_poster(sample: &gst::Sample, target: Duration) -> Result<Poster, MediaError> {
    let buffer = sample
        .buffer()
        .ok_or_else(|| MediaError::Pipeline("poster sample has no buffer".into()))?;
    let jpeg = buffer
        .map_readable()
        .map_err(|_| MediaError::Pipeline("cannot read the poster buffer".into()))?
        .as_slice()
        .to_vec();
    let structure = sample.caps().and_then(|c| c.structure(0));
    let dim = |field: &str| {
        structure
            .and_then(|s| s.get::<i32>(field).ok())
            .unwrap_or(0)
            .max(0) as u32
    };
    let at = buffer
        .pts()
        .and_then(|pts| {
            sample
                .segment()
                .and_then(|seg| seg.downcast_ref::<gst::ClockTime>())
                .and_then(|seg| seg.to_stream_time(pts))
        })
        .map(|t| Duration::from_nanos(t.nseconds()))
        .unwrap_or(target);
    Ok(Poster {
        jpeg,
        width: dim("width"),
        height: dim("height"),
        at,
    })
}

type BuiltPoster = (gst::Pipeline, gst_app::AppSink, Arc<Mutex<BranchState>>);

/// Builds the pipeline; the video chain is added when decodebin exposes the video pad,
/// whose caps give the size and pixel aspect ratio.
fn build(src: &Path, width: u32) -> Result<BuiltPoster, MediaError> {
    let pipeline = gst::Pipeline::new();
    let filesrc = ElemSpec::new("filesrc")
        .prop("location", src.display())
        .build()?;
    let decodebin = pipeline::make("decodebin")?;
    // One sample is all we take; no clock sync, nothing is played.
    let appsink = gst_app::AppSink::builder()
        .max_buffers(1)
        .drop(false)
        .sync(false)
        .build();
    pipeline
        .add_many([&filesrc, &decodebin, appsink.upcast_ref()])
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    filesrc
        .link(&decodebin)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;

    let state = Arc::new(Mutex::new(BranchState::default()));
    {
        let state = state.clone();
        let sink = appsink.clone().upcast::<gst::Element>();
        decodebin.connect_pad_added(move |dbin, pad| {
            if let Err(err) = on_pad_added(dbin, pad, &sink, width, &state) {
                gst::element_error!(
                    dbin,
                    gst::CoreError::Negotiation,
                    ("failed to build poster branch: {}", err)
                );
            }
        });
    }
    {
        let state = state.clone();
        decodebin.connect_no_more_pads(move |dbin| {
            let mut st = state.lock().unwrap();
            if !st.video_claimed {
                st.no_video = true;
                drop(st);
                gst::element_error!(
                    dbin,
                    gst::StreamError::WrongType,
                    ("source has no decodable video stream")
                );
            }
        });
    }
    Ok((pipeline, appsink, state))
}

fn on_pad_added(
    dbin: &gst::Element,
    pad: &gst::Pad,
    sink: &gst::Element,
    want_w: u32,
    state: &Mutex<BranchState>,
) -> Result<(), MediaError> {
    let bin = dbin
        .parent()
        .and_downcast::<gst::Bin>()
        .ok_or_else(|| MediaError::Pipeline("decodebin has no parent bin".into()))?;
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let structure = caps
        .structure(0)
        .ok_or_else(|| MediaError::Pipeline("decoder pad has empty caps".into()))?;
    let is_video = structure.name().starts_with("video/") && {
        let mut st = state.lock().unwrap();
        !std::mem::replace(&mut st.video_claimed, true)
    };
    if !is_video {
        // Audio, subtitles, a second video: an unlinked decodebin pad can fail the pipeline.
        let fakesink = ElemSpec::new("fakesink")
            .prop("sync", false)
            .prop("async", false)
            .build()?;
        bin.add(&fakesink)
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        fakesink
            .sync_state_with_parent()
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        return link(pad, &fakesink);
    }

    let width = structure.get::<i32>("width").unwrap_or(0).max(0) as u32;
    let height = structure.get::<i32>("height").unwrap_or(0).max(0) as u32;
    if width == 0 || height == 0 {
        return Err(MediaError::Pipeline(format!(
            "video pad without size: {caps}"
        )));
    }
    let par = structure
        .get::<gst::Fraction>("pixel-aspect-ratio")
        .map(|f| (f.numer(), f.denom()))
        .unwrap_or((1, 1));
    let (out_w, out_h) = poster_size(width, height, par, want_w);
    let elements = [
        ElemSpec::new("queue"),
        ElemSpec::new("videoconvert"),
        ElemSpec::new("videoscale"),
        // Square pixels out: an anamorphic source is stretched to its display shape. RGB,
        // because JPEG's YCbCr is full range: I420 from a video decoder is limited range, and
        // jpegenc would write its 16..235 as is (grey blacks).
        ElemSpec::caps(format!(
            "video/x-raw,format=RGB,width={out_w},height={out_h},pixel-aspect-ratio=1/1"
        )),
        ElemSpec::new(POSTER_ENCODER).prop("quality", JPEG_QUALITY),
    ]
    .iter()
    .map(ElemSpec::build)
    .collect::<Result<Vec<_>, _>>()?;
    bin.add_many(&elements)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    gst::Element::link_many(&elements).map_err(|e| MediaError::Pipeline(e.to_string()))?;
    elements
        .last()
        .expect("the chain is not empty")
        .link(sink)
        .map_err(|e| MediaError::Pipeline(format!("linking to appsink: {e}")))?;
    // Downstream first, so no element pushes into one that is still stopped.
    for element in elements.iter().rev() {
        element
            .sync_state_with_parent()
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    }
    link(pad, &elements[0])?;
    state.lock().unwrap().video = Some((out_w, out_h));
    tracing::debug!(%caps, out_w, out_h, "poster branch linked");
    Ok(())
}

fn link(src_pad: &gst::Pad, element: &gst::Element) -> Result<(), MediaError> {
    let sink_pad = element
        .static_pad("sink")
        .expect("chain heads have a sink pad");
    src_pad
        .link(&sink_pad)
        .map(|_| ())
        .map_err(|e| MediaError::Pipeline(format!("linking decoder pad: {e:?}")))
}

/// Waits for ASYNC_DONE (a preroll finished) or the first error, until `deadline`.
fn wait_async_done(
    bus: &gst::Bus,
    state: &Mutex<BranchState>,
    deadline: Instant,
) -> Result<(), MediaError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MediaError::Timeout(format!(
                "no poster frame within {POSTER_TIMEOUT:?}"
            )));
        }
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[
                gst::MessageType::Error,
                gst::MessageType::AsyncDone,
                gst::MessageType::Eos,
            ],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(err)) => {
                return Err(pipeline::map_bus_error(err, state));
            }
            Some(gst::MessageView::AsyncDone(_)) => return Ok(()),
            Some(gst::MessageView::Eos(_)) => {
                return Err(MediaError::Pipeline(
                    "the source ended before a frame was decoded".into(),
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_keeps_display_aspect_and_even_height() {
        assert_eq!(poster_size(1920, 1080, (1, 1), 320), (320, 180));
        assert_eq!(poster_size(1920, 1080, (1, 1), 321), (321, 180));
        // 640x360 asked at 100: 56.25 rounds to the nearest even height.
        assert_eq!(poster_size(640, 360, (1, 1), 100), (100, 56));
        // Never wider than the source shows it.
        assert_eq!(poster_size(640, 360, (1, 1), 1280), (640, 360));
        // Odd source height: never taller than the source either.
        assert_eq!(poster_size(641, 361, (1, 1), 1280), (641, 360));
        // Anamorphic 2:1 pixels: 320x240 is shown 640x240.
        assert_eq!(poster_size(320, 240, (2, 1), 1280), (640, 240));
        assert_eq!(poster_size(320, 240, (2, 1), 320), (320, 120));
        // PAL DV 16:9 (720x576, PAR 64/45) shows as 1024x576.
        assert_eq!(poster_size(720, 576, (64, 45), 512), (512, 288));
        // Tiny asks still give a JPEG with rows.
        assert_eq!(poster_size(1920, 1080, (1, 1), 1), (1, 2));
    }

    #[test]
    fn moment_defaults_to_a_tenth_and_stays_inside() {
        let secs = Duration::from_secs;
        assert_eq!(poster_moment(None, Some(secs(60))), secs(6));
        assert_eq!(poster_moment(Some(secs(3)), Some(secs(60))), secs(3));
        assert_eq!(
            poster_moment(Some(secs(600)), Some(secs(60))),
            secs(60) - END_MARGIN
        );
        assert_eq!(poster_moment(None, None), Duration::ZERO);
        assert_eq!(poster_moment(Some(secs(5)), None), secs(5));
        assert_eq!(
            poster_moment(Some(secs(1)), Some(Duration::from_millis(100))),
            Duration::ZERO
        );
    }
}
