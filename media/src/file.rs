//! Transcoding into a file, for background jobs: the rendition `?quality=` serves, which is
//! also every HLS segment of that quality (init segment, then the media segments in order,
//! with their places in a [`SegmentIndex`]), so a finished job serves HLS without a pipeline.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::hls::run::{Cut, RunEnd, RunSink, RunSpec};
use crate::hls::{self, SegmentIndex};
use crate::pipeline::Settings;
use crate::{Encoder, MediaError};
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
    /// Where each HLS segment is in the file.
    pub segments: SegmentIndex,
}

/// Runs the job to completion on the calling thread: one HLS run from the first segment to
/// the last (`hls/run.rs`, the same pipeline and CMAF rules as segments made on demand),
/// the init segment then every media segment appended to `dest` in order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn transcode(
    settings: Settings,
    src: &Path,
    duration: Duration,
    has_audio: bool,
    dest: &Path,
    progress: &dyn Fn(u8),
    cancel: &CancelFlag,
    active: Arc<AtomicUsize>,
) -> Result<FileOutcome, MediaError> {
    let started = Instant::now();
    let result = run(
        settings, src, duration, has_audio, dest, progress, cancel, active,
    );
    if result.is_err() {
        // Never leave a partial file that could be mistaken for a finished rendition.
        remove_quietly(dest);
    }
    let (end, segments) = result?;
    let (width, height) = end
        .video
        .ok_or_else(|| MediaError::NotVideo("no video stream found".into()))?;
    let bytes = std::fs::metadata(dest)?.len();
    progress(100);
    Ok(FileOutcome {
        width,
        height,
        encoder: settings.encoder,
        has_audio: end.audio,
        bytes,
        elapsed: started.elapsed(),
        segments,
    })
}

fn remove_quietly(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %err, "cannot remove partial output");
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    settings: Settings,
    src: &Path,
    duration: Duration,
    has_audio: bool,
    dest: &Path,
    progress: &dyn Fn(u8),
    cancel: &CancelFlag,
    active: Arc<AtomicUsize>,
) -> Result<(RunEnd, SegmentIndex), MediaError> {
    let count = hls::segment_count(duration);
    let mut sink = OneFile {
        out: BufWriter::new(File::create(dest)?),
        written: 0,
        index: SegmentIndex::new(count),
        duration_ns: duration.as_nanos() as u64,
        progress,
        reported: 0,
        last_report: Instant::now(),
        last_pts: 0,
        last_move: Instant::now(),
        cancel,
        stalled: false,
    };
    progress(0);
    let spec = RunSpec {
        settings,
        src,
        count,
        audio: has_audio && settings.aac.is_some(),
        start: 0,
        active,
    };
    let end = hls::run::run(spec, &mut sink)?;
    if cancel.is_cancelled() {
        return Err(MediaError::Cancelled);
    }
    if sink.stalled {
        return Err(MediaError::Timeout(format!(
            "transcode made no progress for {STALL_TIMEOUT:?}"
        )));
    }
    if !end.complete {
        return Err(MediaError::Pipeline(
            "the run stopped before the end".into(),
        ));
    }
    sink.out.flush()?;
    Ok((end, sink.index))
}

/// A job's run: the init segment and every media segment appended to one file, with the
/// place of each recorded.
struct OneFile<'a> {
    out: BufWriter<File>,
    written: u64,
    index: SegmentIndex,
    duration_ns: u64,
    progress: &'a dyn Fn(u8),
    reported: u8,
    last_report: Instant,
    last_pts: u64,
    last_move: Instant,
    cancel: &'a CancelFlag,
    stalled: bool,
}

impl RunSink for OneFile<'_> {
    fn keep_going(&mut self, encoded_ns: u64) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        if encoded_ns != self.last_pts {
            self.last_pts = encoded_ns;
            self.last_move = Instant::now();
        } else if self.last_move.elapsed() > STALL_TIMEOUT {
            self.stalled = true;
            return false;
        }
        // 99 at most until the end: 100 means the file is complete.
        let pct = match self.duration_ns {
            0 => 0,
            d => (u128::from(encoded_ns) * 100 / u128::from(d)).min(99) as u8,
        };
        if pct > self.reported || self.last_report.elapsed() >= PROGRESS_EVERY {
            // Never goes backwards, even if timestamps jitter.
            self.reported = self.reported.max(pct);
            (self.progress)(self.reported);
            self.last_report = Instant::now();
        }
        true
    }

    fn cut(&mut self, cut: Cut) -> Result<bool, MediaError> {
        let bytes = match cut {
            Cut::Init(bytes) => {
                self.index.init = bytes.len() as u64;
                bytes
            }
            Cut::Segment(n, bytes) => {
                self.index.set(n, self.written, bytes.len() as u64);
                bytes
            }
        };
        self.out.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        Ok(true)
    }
}
