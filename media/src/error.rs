//! Error type of the media crate.

/// Everything that can go wrong while probing or transcoding.
///
/// Messages from GStreamer are carried verbatim so logs and HTTP error bodies say what the
/// pipeline actually complained about.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The source is not a video the pipeline can decode (unknown type, audio only, no video
    /// stream). Maps to "415 Unsupported Media Type" in the gateway.
    #[error("not a video: {0}")]
    NotVideo(String),
    /// `probe` found no audio or video stream at all (text file, corrupt file, unknown type).
    #[error("not a media file: {0}")]
    NotMedia(String),
    /// The requested H.264 encoder (or every candidate, for `Auto`) cannot run here.
    #[error("encoder unavailable: {0}")]
    EncoderUnavailable(String),
    /// A GStreamer element needed by the pipeline is not installed.
    #[error("missing GStreamer element `{element}` (install {package})")]
    MissingElement {
        /// Element factory name, e.g. `mp4mux`.
        element: String,
        /// Debian package that provides it.
        package: &'static str,
    },
    /// GStreamer reported an error while building or running the pipeline.
    #[error("GStreamer pipeline error: {0}")]
    Pipeline(String),
    /// Reading the source or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An operation that must be bounded (preroll, probe) took too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The caller cancelled a `transcode_to_file` job.
    #[error("transcode cancelled")]
    Cancelled,
    /// A quality string that is not one of 240, 360, 480, 720, 1080.
    #[error("invalid quality `{0}` (expected 240, 360, 480, 720 or 1080)")]
    InvalidQuality(String),
    /// A poster was asked with a width outside 1..=[`crate::MAX_POSTER_WIDTH`].
    #[error("invalid poster: {0}")]
    InvalidPoster(String),
    /// Every live transcode slot is taken (the number of slots). Maps to "503 SlowDown".
    #[error("all {0} transcode slots are busy; retry shortly")]
    Busy(usize),
    /// Another request is still producing the rendition after the follow wait. Maps to
    /// "503 SlowDown".
    #[error("the rendition is still being produced; retry shortly")]
    StillProducing,
    /// An HLS segment number past the end of the media playlist.
    #[error("no segment {0}")]
    NoSuchSegment(u64),
    /// `gst::init` failed (broken GStreamer installation).
    #[error("GStreamer initialisation failed: {0}")]
    Init(String),
}
