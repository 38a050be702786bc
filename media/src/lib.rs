//! GStreamer media for Nebula: detection, probing, live transcoding to fragmented MP4,
//! transcoding to files for background jobs, JPEG posters, the renditions store, and HLS
//! segments produced on demand ([`hls`]).
//!
//! Layout (every media step lives here; the gateway only adapts it to S3 and the job queue):
//! - [`detect`]: which objects are video or audio, and which videos browsers play as they are.
//! - [`MediaEngine`] (this file): GStreamer set-up and encoder choice (`encoder.rs`), probing
//!   (`probe.rs`), the pipeline (`pipeline.rs`), live streams (`stream.rs`) and file
//!   transcodes (`file.rs`). It reads a [`MediaSource`]: a path, or an open `File`.
//! - [`renditions`]: the store of finished renditions (naming, lookup, install, eviction,
//!   invalidation).
//! - [`MediaService`] (`service.rs`, `live.rs`): what the gateway asks for. A rendition for a
//!   request (finished file, or a live transcode teed into the store, one pipeline per
//!   rendition, limited transcode slots), a rendition made ahead by a job, and HLS segments
//!   (one session per source and quality, `hls/sessions.rs`, sharing the same slots).
//! - [`hls`]: segments and playlists, and the stream copy of H.264/AAC sources (`hls/copy.rs`,
//!   no encoder: the source's samples re-wrapped); `cmaf.rs` holds what every HLS run is pinned to
//!   (audio rate, H.264 profile and level, keyframes on segment boundaries), used by both
//!   `pipeline.rs` and `hls/` so neither imports the other.
//!
//! The engine's methods **block** (GStreamer state changes, Discoverer, whole transcodes);
//! call them from `tokio::task::spawn_blocking` in async code, or use the `_async` variants.
//! The streams ([`TranscodeStream`], [`LiveRendition`]) are normal async `Stream`s polled
//! from async code directly.
//!
//! `README.md` beside this crate records the measurements behind the pipeline's settings
//! (encoder presets, fragment length, AAC encoder choice, the pitfalls it avoids).

mod claims;
mod cmaf;
pub mod detect;
mod encoder;
mod error;
mod file;
pub mod hls;
mod live;
mod pipeline;
mod poster;
mod probe;
mod quality;
pub mod renditions;
mod service;
mod source;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use claims::{Claim, Claims, Produced};
pub use encoder::{Encoder, EncoderChoice};
pub use error::MediaError;
pub use file::{CancelFlag, FileOutcome};
pub use live::LiveRendition;
pub use poster::{
    MAX_POSTER_WIDTH, POSTER_CONTENT_TYPE, Poster, default_poster_moment, poster_size,
};
pub use probe::MediaInfo;
pub use quality::{Quality, output_size};
pub use renditions::{Finished, ObjectRef, RenditionInfo, RenditionStore};
pub use service::{FOLLOW_WAIT, HlsSegment, Installed, MediaService, Rendition, SEGMENT_WAIT};
pub use source::MediaSource;
pub use stream::{STREAM_CONTENT_TYPE, TranscodeStream};

use pipeline::Settings;

/// Probes and transcodes media. Cheap to clone (shared state behind an `Arc`).
#[derive(Debug, Clone)]
pub struct MediaEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    encoder: Encoder,
    aac: Option<&'static str>,
    /// Pipelines currently between build and NULL (streams, file jobs and posters).
    active: Arc<AtomicUsize>,
}

/// H.264 encoders put into a pipeline since the process started (every engine).
static ENCODERS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// Counts one more H.264 encoder put into a pipeline.
pub(crate) fn note_encoder_started() {
    ENCODERS_STARTED.fetch_add(1, Ordering::Relaxed);
}

impl MediaEngine {
    /// Initialises GStreamer, checks the required elements and picks the H.264 encoder.
    ///
    /// Blocking (the first `gst::init` may scan the plugin registry for seconds). Fails with
    /// [`MediaError::EncoderUnavailable`] if the forced encoder (or, for `Auto`, every
    /// encoder) cannot run, and [`MediaError::MissingElement`] if a plugin is missing.
    pub fn new(choice: EncoderChoice) -> Result<Self, MediaError> {
        gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
        for name in pipeline::REQUIRED_ELEMENTS {
            if gst::ElementFactory::find(name).is_none() {
                // `make` produces the error naming the package to install.
                pipeline::make(name)?;
            }
        }
        let encoder = encoder::select(choice)?;
        let aac = pipeline::select_aac();
        if aac.is_none() {
            tracing::warn!(
                "no AAC encoder (avenc_aac or voaacenc); transcoded output will have no audio"
            );
        }
        tracing::info!(
            ?choice,
            encoder = encoder.element_name(),
            aac = aac.unwrap_or("none"),
            "media engine ready"
        );
        Ok(MediaEngine {
            inner: Arc::new(Inner {
                encoder,
                aac,
                active: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// The H.264 encoder in use.
    pub fn encoder(&self) -> Encoder {
        self.inner.encoder
    }

    /// The AAC encoder element in use (`avenc_aac` or `voaacenc`), if any.
    pub fn audio_encoder(&self) -> Option<&'static str> {
        self.inner.aac
    }

    /// Number of pipelines currently running (live streams, file jobs, posters). A dropped
    /// stream leaves this count within about 100 ms.
    pub fn active_pipelines(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// H.264 encoders put into pipelines since the process started, by any engine: what
    /// shows that a stream copy encoded nothing.
    pub fn encoders_started() -> usize {
        ENCODERS_STARTED.load(Ordering::Relaxed)
    }

    /// The stream-copy index of `src` (one demux pass, no decoding), or `None` when it
    /// cannot be stream-copied for browsers (see [`hls::may_copy`] and
    /// [`hls::CopyIndex`]). Blocking: a pass reads the whole file.
    pub fn copy_index(
        &self,
        src: &(impl MediaSource + ?Sized),
        info: &MediaInfo,
    ) -> Result<Option<hls::CopyIndex>, MediaError> {
        if !hls::may_copy(info) {
            return Ok(None);
        }
        hls::CopyIndex::scan(&src.location()?, info, self.inner.active.clone())
    }

    /// Segment `id` of the stream copy of `src` described by `index`: the init segment, or
    /// one demux run cutting media segment N. Blocking.
    pub fn copy_segment(
        &self,
        src: &(impl MediaSource + ?Sized),
        index: &hls::CopyIndex,
        id: hls::SegmentId,
    ) -> Result<Vec<u8>, MediaError> {
        match id {
            hls::SegmentId::Init => Ok(index.init_segment()),
            hls::SegmentId::Media(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n < index.segments.len())
                    .ok_or(MediaError::NoSuchSegment(n))?;
                index.segment(&src.location()?, n, self.inner.active.clone())
            }
        }
    }

    /// Reads duration, size, codecs, bitrate and container of `src`.
    ///
    /// Blocking, bounded by a 10 s timeout. A text, corrupt or unknown file gives
    /// [`MediaError::NotMedia`]; a missing file gives [`MediaError::Io`].
    pub fn probe(&self, src: &(impl MediaSource + ?Sized)) -> Result<MediaInfo, MediaError> {
        probe::probe(&src.location()?)
    }

    /// Starts a live transcode of `src` at `quality` and returns its output stream.
    ///
    /// Blocking until the pipeline has prerolled (typically 0.1-0.3 s), so the output size
    /// is known and source problems surface here: [`MediaError::NotVideo`] for files that
    /// are not video (text, audio only), [`MediaError::Io`] for a missing file,
    /// [`MediaError::Pipeline`] with GStreamer's message otherwise. Call it inside
    /// `spawn_blocking`; the returned stream is then polled from async code.
    pub fn start_stream(
        &self,
        src: &(impl MediaSource + ?Sized),
        quality: Quality,
    ) -> Result<TranscodeStream, MediaError> {
        let location = src.location()?;
        stream::start(self.settings(quality), &location, self.inner.active.clone())
    }

    /// [`MediaEngine::start_stream`] on tokio's blocking pool, for async callers. An open
    /// file may be dropped once this returns: the pipeline has its own descriptor by then.
    pub async fn start_stream_async(
        &self,
        src: impl MediaSource + Send + 'static,
        quality: Quality,
    ) -> Result<TranscodeStream, MediaError> {
        let engine = self.clone();
        spawn_blocking(move || engine.start_stream(&src, quality)).await
    }

    /// [`MediaEngine::probe`] on tokio's blocking pool, for async callers.
    pub async fn probe_async(
        &self,
        src: impl MediaSource + Send + 'static,
    ) -> Result<MediaInfo, MediaError> {
        let engine = self.clone();
        spawn_blocking(move || engine.probe(&src)).await
    }

    /// Takes a JPEG poster `width` pixels wide (at most [`MAX_POSTER_WIDTH`], never wider
    /// than the source shows; height in the display aspect ratio, even) of the frame shown
    /// at `at` (default 10 % of the duration; kept inside the duration).
    ///
    /// Blocking, bounded by a 30 s timeout. [`MediaError::NotVideo`] for files that are not
    /// video (text, audio only), [`MediaError::InvalidPoster`] for a bad width,
    /// [`MediaError::Io`] for a missing file.
    pub fn poster(
        &self,
        src: &(impl MediaSource + ?Sized),
        width: u32,
        at: Option<Duration>,
    ) -> Result<Poster, MediaError> {
        let location = src.location()?;
        poster::grab(&location, width, at, self.inner.active.clone())
    }

    /// [`MediaEngine::poster`] on tokio's blocking pool, for async callers.
    pub async fn poster_async(
        &self,
        src: impl MediaSource + Send + 'static,
        width: u32,
        at: Option<Duration>,
    ) -> Result<Poster, MediaError> {
        let engine = self.clone();
        spawn_blocking(move || engine.poster(&src, width, at)).await
    }

    /// Transcodes `src` at `quality` into a fragmented MP4 at `dest` made of HLS segments:
    /// the init segment, then every media segment in order, cut by the same pipeline and
    /// CMAF rules as segments made on demand ([`hls`]); [`FileOutcome::segments`] tells
    /// where each is, so the file serves both `?quality=` (byte ranges) and HLS.
    ///
    /// Blocking for the whole transcode: run it on a blocking thread. `dest` is written
    /// directly, so pass a temporary path and rename it once this returns `Ok`; on error or
    /// cancel the partial file is deleted. `progress` gets 0..=100 (from the encoded
    /// position over the source duration) at least every second, 100 only on success.
    /// `cancel` stops the job within about 100 ms with [`MediaError::Cancelled`]. A source
    /// that is not a video, or whose duration is unknown, is [`MediaError::NotVideo`].
    pub fn transcode_to_file(
        &self,
        src: &(impl MediaSource + ?Sized),
        quality: Quality,
        dest: &Path,
        progress: impl Fn(u8),
        cancel: &CancelFlag,
    ) -> Result<FileOutcome, MediaError> {
        let location = src.location()?;
        let info = self.probe(src).map_err(|e| match e {
            MediaError::NotMedia(m) => MediaError::NotVideo(m),
            other => other,
        })?;
        let duration = match (info.has_video, info.duration) {
            (true, Some(d)) => d,
            (false, _) => return Err(MediaError::NotVideo("no video stream".into())),
            (true, None) => {
                return Err(MediaError::NotVideo(
                    "unknown duration: cannot cut segments".into(),
                ));
            }
        };
        file::transcode(
            self.settings(quality),
            &location,
            duration,
            info.has_audio,
            dest,
            &progress,
            cancel,
            self.inner.active.clone(),
        )
    }

    /// The `gst-launch-1.0` arguments (without the program name) for the same pipeline and
    /// encoder settings as [`MediaEngine::start_stream`], writing the fragmented MP4 to
    /// `dest`. `info` is the source's [`MediaInfo`] (the output width is computed from it,
    /// as the live pipeline does from the decoded caps). Pass them to
    /// `std::process::Command::new("gst-launch-1.0").args(..)`.
    pub fn gst_launch_args(
        &self,
        src: &Path,
        info: &MediaInfo,
        quality: Quality,
        dest: &Path,
    ) -> Vec<String> {
        let source = pipeline::LaunchSource {
            path: src,
            width: info.width,
            height: info.height,
            fps: info.frame_rate.unwrap_or((0, 1)),
            has_audio: info.has_audio,
        };
        pipeline::launch_args(self.settings(quality), &source, dest)
    }

    /// The same as [`MediaEngine::gst_launch_args`] as one shell command line
    /// (`gst-launch-1.0 -q ...`, arguments quoted where needed).
    pub fn gst_launch_command(
        &self,
        src: &Path,
        info: &MediaInfo,
        quality: Quality,
        dest: &Path,
    ) -> String {
        let mut line = String::from("gst-launch-1.0 -q");
        for arg in self.gst_launch_args(src, info, quality, dest) {
            line.push(' ');
            line.push_str(&pipeline::shell_quote(&arg));
        }
        line
    }

    /// An HLS session for `src` at `quality`, keeping its segment files in `dir` (created).
    ///
    /// `src` is a path or an open `File` (kept open while the session lives, so every
    /// pipeline run reads the same bytes). `info` is the source's probe result: its
    /// duration sets the segment list and its audio flag the track list. `acquire` is asked
    /// for a permit each time a pipeline must start (the caller's concurrency limit).
    /// Cheap: nothing runs until [`hls::HlsSession::get`].
    pub fn hls_session(
        &self,
        src: impl MediaSource + Send + Sync + 'static,
        info: &MediaInfo,
        quality: Quality,
        dir: PathBuf,
        acquire: hls::AcquireRun,
    ) -> Result<hls::HlsSession, MediaError> {
        // Fails fast on a missing source instead of at the first pipeline start.
        let location = src.location()?;
        if !info.has_video {
            return Err(MediaError::NotVideo("no video stream".into()));
        }
        let duration = info
            .duration
            .ok_or_else(|| MediaError::NotVideo("unknown duration: cannot list segments".into()))?;
        hls::HlsSession::new(
            self.settings(quality),
            location,
            Box::new(src),
            duration,
            info.has_audio,
            dir,
            self.inner.active.clone(),
            acquire,
        )
    }

    fn settings(&self, quality: Quality) -> Settings {
        Settings {
            encoder: self.inner.encoder,
            aac: self.inner.aac,
            quality,
        }
    }
}

/// Runs `f` with `tokio::task::spawn_blocking`, turning a panicked task into an error.
async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MediaError> + Send + 'static,
) -> Result<T, MediaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MediaError::Pipeline(format!("media task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_stream<
        T: futures::Stream<Item = Result<bytes::Bytes, MediaError>> + Send + Unpin + 'static,
    >() {
    }

    #[test]
    fn public_types_are_thread_safe() {
        assert_send_sync::<MediaEngine>();
        assert_send_sync::<MediaError>();
        assert_send_sync::<CancelFlag>();
        assert_send_sync::<Poster>();
        assert_stream::<TranscodeStream>();
        assert_stream::<LiveRendition>();
        assert_send_sync::<MediaService>();
    }
}
