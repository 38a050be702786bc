//! Live transcoding into an async byte stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gst::prelude::*;
use tokio::sync::mpsc;

use crate::pipeline::{self, Output, Running, Settings};
use crate::{Encoder, MediaError};

/// Chunks waiting between the pipeline thread and the reader. With the appsink's
/// `max-buffers` this bounds memory per stream to a few hundred KiB.
const CHANNEL_CAPACITY: usize = 8;
/// The puller thread merges small mp4mux buffers (one per frame inside an mdat) up to this.
const CHUNK_TARGET: usize = 64 * 1024;
/// How long the puller waits for a sample before checking for errors and a gone reader.
/// Bounds the reaction time to a dropped stream.
const PULL_TIMEOUT: Duration = Duration::from_millis(100);
/// Preroll (type detection, first decoded frame, encoder start) must finish in this time.
const PREROLL_TIMEOUT: Duration = Duration::from_secs(15);

/// Content type of the bytes a [`TranscodeStream`] yields.
pub const STREAM_CONTENT_TYPE: &str = "video/mp4";

enum Item {
    Data(Bytes),
    Failed(MediaError),
    End,
}

/// A running transcode producing fragmented MP4 (`ftyp`+`moov` first, then `moof`/`mdat`
/// pairs), so any prefix is playable.
///
/// Yields `Ok(bytes)` chunks, then ends; a GStreamer error mid-way yields one `Err` and
/// ends. The pipeline only runs as fast as the stream is polled (bounded queues all the way).
/// Dropping the stream (client disconnect) stops the pipeline: its thread notices within
/// about 100 ms, sets it to NULL and exits.
pub struct TranscodeStream {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Encoder producing the video.
    pub encoder: Encoder,
    /// Whether the output carries an AAC audio track.
    pub has_audio: bool,
    rx: mpsc::Receiver<Item>,
    done: bool,
}

impl std::fmt::Debug for TranscodeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscodeStream")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("encoder", &self.encoder)
            .field("has_audio", &self.has_audio)
            .finish_non_exhaustive()
    }
}

impl futures::Stream for TranscodeStream {
    type Item = Result<Bytes, MediaError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Item::Data(bytes))) => Poll::Ready(Some(Ok(bytes))),
            Poll::Ready(Some(Item::Failed(err))) => {
                self.done = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(Some(Item::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            // The puller thread went away without saying End: the output is truncated,
            // which the reader must not mistake for a complete file.
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(MediaError::Pipeline(
                    "transcoder stopped without finishing".into(),
                ))))
            }
        }
    }
}

/// Builds, prerolls and starts the pipeline, then hands it to a puller thread.
pub(crate) fn start(
    settings: Settings,
    src: &std::path::Path,
    active: Arc<AtomicUsize>,
) -> Result<TranscodeStream, MediaError> {
    let built = pipeline::build(settings, src, Output::Stream)?;
    let appsink = built
        .sink
        .clone()
        .downcast::<gst_app::AppSink>()
        .expect("stream output uses an appsink");
    // From here on, any early return drops `running`, which sets the pipeline to NULL.
    let running = Running::new(built.pipeline.clone(), active);
    let bus = running.pipeline.bus().expect("pipelines have a bus");

    // PAUSED first: decodebin finds the streams, our pad-added handler builds the branches
    // and the encoder produces the header. Errors such as "not a video" surface here.
    if running.pipeline.set_state(gst::State::Paused).is_err() {
        return Err(first_error(&bus, &built.state)
            .unwrap_or_else(|| MediaError::Pipeline("pipeline refused to start (PAUSED)".into())));
    }
    wait_preroll(&bus, &built.state)?;

    let (width, height, has_audio) = {
        let st = built.state.lock().unwrap();
        let Some((w, h)) = st.video else {
            return Err(MediaError::NotVideo("no video stream found".into()));
        };
        (w, h, st.audio)
    };

    running
        .pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| {
            first_error(&bus, &built.state)
                .unwrap_or_else(|| MediaError::Pipeline("pipeline refused to play".into()))
        })?;

    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let state = built.state.clone();
    std::thread::Builder::new()
        .name("nebula-transcode".into())
        .spawn(move || pull_loop(running, appsink, bus, state, tx))?;

    tracing::debug!(src = %src.display(), width, height, has_audio, "transcode stream started");
    Ok(TranscodeStream {
        width,
        height,
        encoder: settings.encoder,
        has_audio,
        rx,
        done: false,
    })
}

/// Waits for ASYNC_DONE (preroll finished) or the first error.
fn wait_preroll(
    bus: &gst::Bus,
    state: &std::sync::Mutex<pipeline::BranchState>,
) -> Result<(), MediaError> {
    let deadline = Instant::now() + PREROLL_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MediaError::Timeout(format!(
                "pipeline did not preroll within {PREROLL_TIMEOUT:?}"
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
            // EOS during preroll: a very short source already fully encoded; the data is
            // waiting in the appsink.
            Some(gst::MessageView::AsyncDone(_)) | Some(gst::MessageView::Eos(_)) => {
                return Ok(());
            }
            _ => {}
        }
    }
}

/// The first error already on the bus, if any.
fn first_error(
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

/// Pulls samples from the appsink and sends them to the reader until EOS, an error, or the
/// reader going away. Runs on its own thread because appsink pulling blocks.
fn pull_loop(
    running: Running,
    appsink: gst_app::AppSink,
    bus: gst::Bus,
    state: Arc<std::sync::Mutex<pipeline::BranchState>>,
    tx: mpsc::Sender<Item>,
) {
    let mut pending = BytesMut::new();
    loop {
        if tx.is_closed() {
            tracing::debug!("reader gone; stopping transcode");
            break;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(err) = msg.view() {
                let err = pipeline::map_bus_error(err, &state);
                tracing::warn!(%err, "transcode failed");
                let _ = tx.blocking_send(Item::Failed(err));
            }
            break;
        }
        let Some(sample) =
            appsink.try_pull_sample(gst::ClockTime::from_nseconds(PULL_TIMEOUT.as_nanos() as u64))
        else {
            if appsink.is_eos() {
                let _ = tx.blocking_send(Item::End);
                break;
            }
            continue;
        };
        append(&mut pending, &sample);
        // Merge what is already queued so the reader gets fewer, larger chunks.
        while pending.len() < CHUNK_TARGET {
            match appsink.try_pull_sample(gst::ClockTime::ZERO) {
                Some(sample) => append(&mut pending, &sample),
                None => break,
            }
        }
        // Blocks while the channel is full: this is the backpressure. Fails at once when
        // the reader is dropped.
        if tx
            .blocking_send(Item::Data(pending.split().freeze()))
            .is_err()
        {
            tracing::debug!("reader gone; stopping transcode");
            break;
        }
    }
    drop(running);
}

fn append(pending: &mut BytesMut, sample: &gst::Sample) {
    if let Some(buffer) = sample.buffer()
        && let Ok(map) = buffer.map_readable()
    {
        pending.extend_from_slice(map.as_slice());
    }
}
