//! The demux runs of stream copy (`copy.rs`): the source's first H.264 and AAC streams as
//! they are stored, buffer by buffer, without decoding.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::copy::copy_error;
use crate::MediaError;
use crate::pipeline::{ElemSpec, Running, make};

/// A run may go this long without any buffer before it is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Track {
    Video,
    Audio,
}

/// One buffer out of the demuxer.
pub(super) struct Pulled {
    pub track: Track,
    /// Stream time; `None` for samples before the presentation start (they are skipped).
    pub pts: Option<u64>,
    pub duration: Option<u64>,
    pub size: u32,
    pub keyframe: bool,
    pub buffer: Option<gst::Buffer>,
}

/// Codec configuration the demuxer's streams carry.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamCaps {
    pub avcc: Option<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    pub asc: Option<Vec<u8>>,
    pub rate: u32,
    pub channels: u32,
    /// A stream's configuration changed midway (cannot be one init segment).
    pub changed: bool,
}

/// `filesrc ! <demuxer>`, the first H.264 stream (as AVC access units: as stored in MP4 and
/// Matroska, converted by h264parse from MPEG-TS) and the first AAC stream (raw; aacparse
/// takes ADTS apart) into appsinks whose buffers come out of [`Demux::next`], in the
/// demuxer's order.
pub(super) struct Demux {
    running: Running,
    rx: Receiver<Pulled>,
    pub state: Arc<Mutex<StreamCaps>>,
    bus: gst::Bus,
    /// The end of the source was reached: what is left is in the channel.
    eos: bool,
}

impl Demux {
    pub fn open(
        src: &Path,
        demuxer: &str,
        audio: bool,
        keep_data: bool,
        active: Arc<AtomicUsize>,
    ) -> Result<Self, MediaError> {
        let pipeline = gst::Pipeline::new();
        let filesrc = ElemSpec::new("filesrc")
            .prop("location", src.display())
            .build()?;
        let demux = make(demuxer)?;
        pipeline
            .add_many([&filesrc, &demux])
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        filesrc
            .link(&demux)
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        let (tx, rx) = channel();
        let state = Arc::new(Mutex::new(StreamCaps::default()));
        let claimed = Arc::new(Mutex::new((false, !audio)));
        {
            let state = state.clone();
            demux.connect_pad_added(move |bin, pad| {
                if let Err(err) = on_pad(bin, pad, &claimed, &state, &tx, keep_data) {
                    gst::element_error!(bin, gst::CoreError::Negotiation, ("stream copy: {}", err));
                }
            });
        }
        let bus = pipeline.bus().expect("pipelines have a bus");
        Ok(Demux {
            running: Running::new(pipeline, active),
            rx,
            state,
            bus,
            eos: false,
        })
    }

    /// Starts the run, from `seek` ns (stream time) if given.
    pub fn play(&mut self, seek: Option<u64>) -> Result<(), MediaError> {
        let pipeline = &self.running.pipeline;
        pipeline.set_state(gst::State::Paused).map_err(|_| {
            self.error()
                .unwrap_or_else(|| copy_error("refused to start".into()))
        })?;
        // Prerolled: every stream has its branch and its first buffer.
        let (result, ..) = pipeline.state(gst::ClockTime::from_seconds(STALL_TIMEOUT.as_secs()));
        if result.is_err() {
            return Err(self
                .error()
                .unwrap_or_else(|| MediaError::Timeout("stream copy: no preroll".into())));
        }
        if let Some(ns) = seek {
            pipeline
                .seek(
                    1.0,
                    gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE,
                    gst::SeekType::Set,
                    gst::ClockTime::from_nseconds(ns),
                    gst::SeekType::None,
                    gst::ClockTime::NONE,
                )
                .map_err(|_| copy_error(format!("seek to {ns} ns refused")))?;
        }
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            self.error()
                .unwrap_or_else(|| copy_error("refused to play".into()))
        })?;
        Ok(())
    }

    /// The next buffer, `None` at the end of the source.
    pub fn next(&mut self) -> Result<Option<Pulled>, MediaError> {
        if self.eos {
            return Ok(self.rx.try_recv().ok());
        }
        let since = Instant::now();
        loop {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(p) => return Ok(Some(p)),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // One look at the bus for both (popping a kind drops every other kind).
            match self
                .bus
                .pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos])
            {
                Some(msg) if msg.type_() == gst::MessageType::Eos => {
                    // Everything the sinks took is in the channel by now.
                    self.eos = true;
                    return Ok(self.rx.try_recv().ok());
                }
                Some(msg) => return Err(bus_error(&msg)),
                None => {}
            }
            if since.elapsed() > STALL_TIMEOUT {
                return Err(MediaError::Timeout(
                    "stream copy: the demuxer stalled".into(),
                ));
            }
        }
    }

    fn error(&self) -> Option<MediaError> {
        let msg = self.bus.pop_filtered(&[gst::MessageType::Error])?;
        Some(bus_error(&msg))
    }
}

fn bus_error(msg: &gst::Message) -> MediaError {
    match msg.view() {
        gst::MessageView::Error(err) => copy_error(format!(
            "{} ({})",
            err.error(),
            err.debug().map(|d| d.to_string()).unwrap_or_default()
        )),
        _ => copy_error("unexpected bus message".into()),
    }
}

fn on_pad(
    bin: &gst::Element,
    pad: &gst::Pad,
    claimed: &Mutex<(bool, bool)>,
    state: &Arc<Mutex<StreamCaps>>,
    tx: &Sender<Pulled>,
    keep_data: bool,
) -> Result<(), MediaError> {
    let pipeline = bin
        .parent()
        .and_downcast::<gst::Bin>()
        .ok_or_else(|| copy_error("the demuxer has no parent".into()))?;
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let s = caps
        .structure(0)
        .ok_or_else(|| copy_error("empty caps".into()))?;
    let field = |name: &str| s.get::<&str>(name).ok();
    let track = {
        let mut c = claimed.lock().unwrap();
        match s.name().as_str() {
            "video/x-h264" if !c.0 => {
                c.0 = true;
                Some(Track::Video)
            }
            "audio/mpeg" if !c.1 && matches!(s.get::<i32>("mpegversion"), Ok(2 | 4)) => {
                c.1 = true;
                Some(Track::Audio)
            }
            _ => None,
        }
    };
    let mut chain = Vec::new();
    match track {
        Some(Track::Video)
            if (field("stream-format"), field("alignment")) != (Some("avc"), Some("au")) =>
        {
            chain.push(ElemSpec::new("h264parse"));
            chain.push(ElemSpec::caps(
                "video/x-h264,stream-format=avc,alignment=au".into(),
            ));
        }
        Some(Track::Audio) if field("stream-format") != Some("raw") => {
            chain.push(ElemSpec::new("aacparse"));
            chain.push(ElemSpec::caps("audio/mpeg,stream-format=raw".into()));
        }
        _ => {}
    }
    // The demuxer may feed every stream from one thread: a queue in front of each sink
    // lets every sink preroll while another one holds its first buffer.
    chain.push(ElemSpec::new("queue"));
    let mut elements = chain
        .iter()
        .map(ElemSpec::build)
        .collect::<Result<Vec<_>, _>>()?;
    let sink = match track {
        Some(track) => appsink(track, state.clone(), tx.clone(), keep_data),
        // Other streams are read and dropped: an unlinked pad would stop the demuxer.
        None => ElemSpec::new("fakesink").prop("sync", false).build()?,
    };
    elements.push(sink);
    pipeline
        .add_many(&elements)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    gst::Element::link_many(&elements).map_err(|e| MediaError::Pipeline(e.to_string()))?;
    for e in elements.iter().rev() {
        e.sync_state_with_parent()
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    }
    let head = elements[0].static_pad("sink").expect("a sink pad");
    pad.link(&head)
        .map_err(|e| copy_error(format!("linking {caps}: {e:?}")))?;
    Ok(())
}

/// An appsink sending every buffer of `track` into `tx`, noting the stream's configuration.
/// Unbounded: the demuxer feeds every stream from one thread, so one full sink would
/// starve the others.
fn appsink(
    track: Track,
    state: Arc<Mutex<StreamCaps>>,
    tx: Sender<Pulled>,
    keep_data: bool,
) -> gst::Element {
    let seen_caps = Mutex::new(None::<gst::Caps>);
    gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(0)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(caps) = sample.caps() {
                        let mut seen = seen_caps.lock().unwrap();
                        if seen.as_ref() != Some(&caps.to_owned()) {
                            note_caps(track, caps, &mut state.lock().unwrap(), seen.is_some());
                            *seen = Some(caps.to_owned());
                        }
                    }
                    let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                    let segment = sample
                        .segment()
                        .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
                    let pts = match (buffer.pts(), &segment) {
                        (Some(pts), Some(seg)) => seg.to_stream_time(pts).map(|t| t.nseconds()),
                        (pts, None) => pts.map(|t| t.nseconds()),
                        (None, _) => None,
                    };
                    let pulled = Pulled {
                        track,
                        pts,
                        duration: buffer.duration().map(|d| d.nseconds()),
                        size: buffer.size() as u32,
                        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                        buffer: keep_data.then_some(buffer),
                    };
                    // Before the presentation start (an edit list's priming samples):
                    // not part of any segment.
                    if pulled.pts.is_none() {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    tx.send(pulled).map_err(|_| gst::FlowError::Eos)?;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build()
        .upcast()
}

fn note_caps(track: Track, caps: &gst::CapsRef, st: &mut StreamCaps, again: bool) {
    let Some(s) = caps.structure(0) else {
        return;
    };
    let data = s
        .get::<gst::Buffer>("codec_data")
        .ok()
        .and_then(|b| b.map_readable().ok().map(|m| m.to_vec()));
    match track {
        Track::Video => {
            if again && data != st.avcc {
                st.changed = true;
            }
            st.avcc = data;
            st.width = s.get::<i32>("width").unwrap_or(0).max(0) as u32;
            st.height = s.get::<i32>("height").unwrap_or(0).max(0) as u32;
        }
        Track::Audio => {
            if again && data != st.asc {
                st.changed = true;
            }
            st.asc = data;
            st.rate = s.get::<i32>("rate").unwrap_or(0).max(0) as u32;
            st.channels = s.get::<i32>("channels").unwrap_or(0).max(0) as u32;
        }
    }
}
