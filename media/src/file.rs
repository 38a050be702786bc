//! Transcoding into a file, for background jobs and the renditions cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;

use crate::pipeline::{self, Output, Running, Settings};
use crate::{Encoder, MediaError};

/// How often the job loop checks the bus, the cancel flag and progress. Bounds cancel latency.
const TICK: Duration = Duration::from_millis(100);
/// Progress is reported whenever it changes (checked every tick), and at least this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A job whose output position has not moved for this long is considered stuck.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Cancellation flag shared between a job and whoever may cancel it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop; it does within about 100 ms.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Result of a finished `transcode_to_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Encoder that produced the video.
    pub encoder: Encoder,
    /// Whether the output has an audio track.
    pub has_audio: bool,
    /// Size of the written file in bytes.
    pub bytes: u64,
    /// Wall time the transcode took.
    pub elapsed: Duration,
}

/// Runs the job to completion on the calling thread.
pub(crate) fn transcode(
    settings: Settings,
    src: &Path,
    dest: &Path,
    progress: &dyn Fn(u8),
    cancel: &CancelFlag,
    active: Arc<AtomicUsize>,
) -> Result<FileOutcome, MediaError> {
    let started = Instant::now();
    let result = run(settings, src, dest, progress, cancel, active);
    if result.is_err() {
        // Never leave a partial file that could be mistaken for a finished rendition.
        remove_quietly(dest);
    }
    // mp4mux normally deletes its faststart scratch file; not when stopped half-way.
    remove_quietly(&pipeline::faststart_temp(dest));
    let (width, height, has_audio) = result?;
    let bytes = std::fs::metadata(dest)?.len();
    progress(100);
    Ok(FileOutcome {
        width,
        height,
        encoder: settings.encoder,
        has_audio,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn remove_quietly(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %err, "cannot remove partial output");
    }
}

fn run(
    settings: Settings,
    src: &Path,
    dest: &Path,
    progress: &dyn Fn(u8),
    cancel: &CancelFlag,
    active: Arc<AtomicUsize>,
) -> Result<(u32, u32, bool), MediaError> {
    let built = pipeline::build(settings, src, Output::File(PathBuf::from(dest)))?;
    let running = Running::new(built.pipeline.clone(), active);
    let bus = running.pipeline.bus().expect("pipelines have a bus");
    if running.pipeline.set_state(gst::State::Playing).is_err() {
        return Err(bus_error_now(&bus, &built.state)
            .unwrap_or_else(|| MediaError::Pipeline("pipeline refused to start".into())));
    }

    let mut reported: u8 = 0;
    progress(0);
    let mut last_report = Instant::now();
    let mut last_pts = 0;
    let mut last_move = Instant::now();
    let mut duration_ns: Option<u64> = None;
    loop {
        if cancel.is_cancelled() {
            drop(running);
            return Err(MediaError::Cancelled);
        }
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(TICK.as_nanos() as u64),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => break,
            Some(gst::MessageView::Error(err)) => {
                return Err(pipeline::map_bus_error(err, &built.state));
            }
            _ => {}
        }

        let pts = built.video_pts.load(Ordering::Relaxed);
        if pts != last_pts {
            last_pts = pts;
            last_move = Instant::now();
        } else if last_move.elapsed() > STALL_TIMEOUT {
            return Err(MediaError::Timeout(format!(
                "transcode made no progress for {STALL_TIMEOUT:?}"
            )));
        }
        if duration_ns.is_none() {
            duration_ns = query_duration(&built);
        }
        // 99 at most until EOS: 100 means the file is complete.
        let pct = match duration_ns {
            Some(d) if d > 0 => ((u128::from(pts) * 100 / u128::from(d)).min(99)) as u8,
            _ => 0,
        };
        if pct > reported || last_report.elapsed() >= PROGRESS_EVERY {
            // Never goes backwards, even if timestamps jitter.
            reported = reported.max(pct);
            progress(reported);
            last_report = Instant::now();
        }
    }

    let st = built.state.lock().unwrap();
    let (w, h) = st
        .video
        .ok_or_else(|| MediaError::NotVideo("no video stream found".into()))?;
    let has_audio = st.audio;
    drop(st);
    // NULL closes the file (filesink flushed it at EOS).
    drop(running);
    Ok((w, h, has_audio))
}

/// Source duration. The pipeline query travels upstream from the sink to the demuxer;
/// asking the decoder's video pad directly is the fallback if a muxer does not forward it.
fn query_duration(built: &pipeline::Built) -> Option<u64> {
    built
        .pipeline
        .query_duration::<gst::ClockTime>()
        .or_else(|| {
            let pad = built.video_pad.lock().unwrap().clone()?;
            pad.query_duration::<gst::ClockTime>()
        })
        .map(|d| d.nseconds())
}

fn bus_error_now(
    bus: &gst::Bus,
    state: &std::sync::Mutex<pipeline::BranchState>,
) -> Option<MediaError> {
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(500),
        &[gst::MessageType::Error],
    )?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(pipeline::map_bus_error(err, state)),
        _ => None,
    }
}
