//! One run of an HLS pipeline: built, started at a segment (flushing, accurate seek), its
//! fragmented MP4 cut into an init segment and media segments on the source timeline, which
//! go to the caller in order. An on-demand run (`session.rs`) writes each to its own file and
//! waits for its viewer; a background job (`file.rs`) appends them all to one file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::SEGMENT_DURATION;
use super::fmp4::{self, BoxReader, Track, TrafSamples};
use super::mux::{self, FragSample, FragTrack};
use crate::MediaError;
use crate::pipeline::{self, BranchState, HlsOutput, Output, Running, Settings};

/// Building the pipeline and finding the streams must take less than this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the run blocks on the appsink before checking for errors and its caller.
const PULL_TIMEOUT: Duration = Duration::from_millis(100);
/// How far before a run's first segment the pipeline seeks. More than a frame (the decoder
/// clips the frame spanning the seek position to start there) and than a decoded audio
/// buffer.
const PRE_SEEK: Duration = Duration::from_millis(300);
/// A timestamp at most this far below a segment start belongs to that segment (rounding).
const SLACK_NS: u64 = 1_000_000;

/// What to run.
pub(crate) struct RunSpec<'a> {
    pub settings: Settings,
    /// Where the pipeline reads the source.
    pub src: &'a Path,
    /// Number of media segments of the source.
    pub count: u64,
    /// Whether to mux an audio track (the source has one and an AAC encoder exists).
    pub audio: bool,
    /// First segment.
    pub start: u64,
    /// The engine's count of running pipelines.
    pub active: Arc<AtomicUsize>,
}

/// Where a run's output goes.
pub(crate) trait RunSink {
    /// Asked between pulls (at least every [`PULL_TIMEOUT`]), with the source-timeline
    /// position the video encoder has reached (ns): `false` stops the run.
    fn keep_going(&mut self, encoded_ns: u64) -> bool;
    /// The init segment, then each media segment in order: `false` stops the run.
    fn cut(&mut self, cut: Cut) -> Result<bool, MediaError>;
}

/// How a run ended.
pub(crate) struct RunEnd {
    /// Every segment up to the end of the source was handed out.
    pub complete: bool,
    /// Output width and height of the video.
    pub video: Option<(u32, u32)>,
    /// Whether the output has an audio track.
    pub audio: bool,
}

/// Runs one pipeline from segment `spec.start` until the end, `sink` stopping it, or an error.
pub(crate) fn run(spec: RunSpec<'_>, sink: &mut dyn RunSink) -> Result<RunEnd, MediaError> {
    let segment_ns = SEGMENT_DURATION.as_nanos() as u64;
    let start_ns = spec.start * segment_ns;
    let built = pipeline::build(
        spec.settings,
        spec.src,
        Output::Hls(HlsOutput {
            segment_ns,
            start_ns,
            audio: spec.audio,
        }),
    )?;
    let appsink = built
        .sink
        .clone()
        .downcast::<gst_app::AppSink>()
        .expect("hls output uses an appsink");
    let running = Running::new(built.pipeline.clone(), spec.active.clone());
    let bus = running.pipeline.bus().expect("pipelines have a bus");

    if running.pipeline.set_state(gst::State::Paused).is_err() {
        return Err(
            bus_error(&bus, &built.state, gst::ClockTime::from_mseconds(500))
                .unwrap_or_else(|| MediaError::Pipeline("pipeline refused to start".into())),
        );
    }
    // Seek once decodebin has exposed every stream (their branches drop data until then).
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while !built.state.lock().unwrap().all_pads {
        if let Some(err) = bus_error(&bus, &built.state, gst::ClockTime::from_mseconds(10)) {
            return Err(err);
        }
        if Instant::now() > deadline {
            return Err(MediaError::Timeout(format!(
                "no streams found within {SETUP_TIMEOUT:?}"
            )));
        }
    }
    if start_ns > 0 {
        // A little before the segment: the decoders' clipping then happens there, and the
        // cut at the segment start is ours (pipeline.rs, `gate_until_seeked`), identical
        // to where a run from further back forced its keyframe.
        let seek_ns = start_ns.saturating_sub(PRE_SEEK.as_nanos() as u64);
        if !built.seek(seek_ns) {
            return Err(MediaError::Pipeline(format!(
                "seek to {start_ns} ns refused"
            )));
        }
    }
    if running.pipeline.set_state(gst::State::Playing).is_err() {
        return Err(
            bus_error(&bus, &built.state, gst::ClockTime::from_mseconds(500))
                .unwrap_or_else(|| MediaError::Pipeline("pipeline refused to play".into())),
        );
    }

    let mut cutter = Cutter::new(spec.start, spec.count, segment_ns);
    let end = |complete| {
        let st = built.state.lock().unwrap();
        RunEnd {
            complete,
            video: st.video,
            audio: st.audio,
        }
    };
    loop {
        if !sink.keep_going(built.video_pts.load(Ordering::Relaxed)) {
            return Ok(end(false));
        }
        if let Some(err) = bus_error(&bus, &built.state, gst::ClockTime::ZERO) {
            return Err(err);
        }
        let pulled =
            appsink.try_pull_sample(gst::ClockTime::from_nseconds(PULL_TIMEOUT.as_nanos() as u64));
        let at_end = pulled.is_none() && appsink.is_eos();
        let outputs = match pulled {
            Some(sample) => {
                let buffer = sample
                    .buffer()
                    .ok_or_else(|| MediaError::Pipeline("sample without buffer".into()))?;
                let map = buffer
                    .map_readable()
                    .map_err(|_| MediaError::Pipeline("unreadable buffer".into()))?;
                cutter.push(map.as_slice(), &built.state)?
            }
            None if at_end => cutter.finish(),
            None => continue,
        };
        for out in outputs {
            if !sink.cut(out)? {
                return Ok(end(false));
            }
        }
        if at_end {
            return Ok(end(true));
        }
    }
}

/// The first error on the bus within `wait`, if any.
fn bus_error(
    bus: &gst::Bus,
    state: &Mutex<BranchState>,
    wait: gst::ClockTime,
) -> Option<MediaError> {
    let msg = bus.timed_pop_filtered(wait, &[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(pipeline::map_bus_error(err, state)),
        _ => None,
    }
}

/// What the cutter hands out.
#[derive(Debug)]
pub(crate) enum Cut {
    Init(Vec<u8>),
    Segment(u64, Vec<u8>),
}

/// Cuts mp4mux's fragmented output into an init segment and media segments, moving every
/// fragment's decode time onto the source timeline. mp4mux writes one `moof` per track
/// (several for a track when its fragment fills up); each segment is written again as one
/// `moof` with a `traf` per track (`mux.rs`), numbered `segment + 1` like copied segments,
/// so a player reaching a segment by a seek sees a sequence break and reads every track's
/// `tfdt` (VLC 3.0 reads none otherwise).
struct Cutter {
    reader: BoxReader,
    start: u64,
    count: u64,
    segment_ns: u64,
    /// Stream offset of the next box (a `tfhd` base data offset counts from the start).
    pos: u64,
    ftyp: Option<Vec<u8>>,
    tracks: Vec<Track>,
    /// Per track: added to mp4mux's decode times (track timescale).
    offsets: HashMap<u32, i128>,
    /// A moof waiting for its mdat, with its stream offset.
    moof: Option<(Vec<u8>, u64)>,
    /// Segments being gathered: each track's samples so far.
    pending: BTreeMap<u64, Vec<TrackRun>>,
    /// Newest segment each track has reached.
    reached: HashMap<u32, u64>,
    /// Where each track's newest fragment ends on the source timeline (ns).
    ends: HashMap<u32, u64>,
}

/// One track's samples in a segment being gathered.
struct TrackRun {
    track_id: u32,
    /// Of the first sample, on the source timeline (track timescale).
    decode_time: u64,
    samples: Vec<FragSample>,
    data: Vec<u8>,
}

impl Cutter {
    fn new(start: u64, count: u64, segment_ns: u64) -> Self {
        Cutter {
            reader: BoxReader::default(),
            start,
            count,
            segment_ns,
            pos: 0,
            ftyp: None,
            tracks: Vec::new(),
            offsets: HashMap::new(),
            moof: None,
            pending: BTreeMap::new(),
            reached: HashMap::new(),
            ends: HashMap::new(),
        }
    }

    fn push(&mut self, data: &[u8], state: &Mutex<BranchState>) -> Result<Vec<Cut>, MediaError> {
        self.reader.push(data);
        let mut out = Vec::new();
        while let Some((kind, bytes)) = self.reader.next_box()? {
            let at = self.pos;
            self.pos += bytes.len() as u64;
            match &kind {
                b"ftyp" => self.ftyp = Some(bytes),
                b"moov" if self.tracks.is_empty() => {
                    self.tracks = fmp4::tracks(&bytes)?;
                    let mut init = self.ftyp.take().unwrap_or_default();
                    init.extend_from_slice(&bytes);
                    out.push(Cut::Init(init));
                }
                b"moof" => self.moof = Some((bytes, at)),
                b"mdat" => {
                    let Some((moof, moof_at)) = self.moof.take() else {
                        continue;
                    };
                    for traf in fmp4::read_fragment(&moof, moof_at, &bytes, at, &self.tracks)? {
                        self.add(traf, state)?;
                    }
                    self.emit_complete(&mut out);
                }
                // uuid (XMP), mfra, free: not part of HLS segments.
                _ => {}
            }
        }
        Ok(out)
    }

    /// Moves a traf's samples onto the source timeline and adds them to their segment.
    fn add(&mut self, traf: TrafSamples, state: &Mutex<BranchState>) -> Result<(), MediaError> {
        let track = self
            .tracks
            .iter()
            .find(|t| t.id == traf.track_id)
            .copied()
            .ok_or_else(|| MediaError::Pipeline("fragment of an unknown track".into()))?;
        let scale = i128::from(track.timescale);
        let offset = match self.offsets.get(&track.id) {
            Some(o) => *o,
            None => {
                let st = state.lock().unwrap();
                let first = if track.video {
                    st.first_video_ns
                } else {
                    st.first_audio_ns
                };
                let first_ns = i128::from(first.unwrap_or(self.start * self.segment_ns));
                let anchored = (first_ns * scale + 500_000_000) / 1_000_000_000;
                let o = anchored - i128::from(traf.decode_time);
                self.offsets.insert(track.id, o);
                o
            }
        };
        let time = (i128::from(traf.decode_time) + offset).max(0) as u64;
        let to_ns = |t: u64| (u128::from(t) * 1_000_000_000 / u128::from(track.timescale)) as u64;
        let seg = ((to_ns(time) + SLACK_NS) / self.segment_ns).clamp(self.start, self.count - 1);
        let r = self.reached.entry(track.id).or_insert(seg);
        *r = (*r).max(seg);
        let duration: u64 = traf.samples.iter().map(|s| u64::from(s.duration)).sum();
        self.ends.insert(track.id, to_ns(time + duration));

        let runs = self.pending.entry(seg).or_default();
        let Some(run) = runs.iter_mut().find(|r| r.track_id == track.id) else {
            runs.push(TrackRun {
                track_id: track.id,
                decode_time: time,
                samples: traf.samples,
                data: traf.data,
            });
            return Ok(());
        };
        // One traf per track holds one contiguous run. mp4mux's fragments of a track follow
        // each other exactly; should one not, the sample before the join absorbs the gap.
        let end: u64 = run.decode_time
            + run
                .samples
                .iter()
                .map(|s| u64::from(s.duration))
                .sum::<u64>();
        match run.samples.last_mut() {
            None => run.decode_time = time,
            Some(last) if time != end => {
                let duration = i128::from(last.duration) + i128::from(time) - i128::from(end);
                last.duration = u32::try_from(duration)
                    .ok()
                    .filter(|d| *d > 0)
                    .ok_or_else(|| MediaError::Pipeline("mp4mux fragments overlap".into()))?;
            }
            Some(_) => {}
        }
        run.samples.extend(traf.samples);
        run.data.extend(traf.data);
        Ok(())
    }

    /// One segment's `moof` + `mdat`, tracks in init-segment order.
    fn segment(&self, n: u64, runs: Vec<TrackRun>) -> Cut {
        let tracks: Vec<FragTrack<'_>> = self
            .tracks
            .iter()
            .filter_map(|t| runs.iter().find(|r| r.track_id == t.id))
            .filter(|r| !r.samples.is_empty())
            .map(|r| FragTrack {
                track_id: r.track_id,
                decode_time: r.decode_time,
                samples: &r.samples,
                data: &r.data,
            })
            .collect();
        Cut::Segment(n, mux::fragment(n as u32 + 1, &tracks))
    }

    /// Hands out the oldest pending segments once every track is done with them (its
    /// fragments reach the segment's end, or it has moved past it), or one track is far
    /// ahead (the other has ended).
    ///
    /// mp4mux writes a fragment once it is whole, so the fragment that reaches the end of a
    /// segment says the segment is done: waiting for the next segment's fragment instead
    /// would make a cold request wait for two segments' encodes.
    fn emit_complete(&mut self, out: &mut Vec<Cut>) {
        while let Some((&s, _)) = self.pending.first_key_value() {
            // The last segment ends with the source: only the end of the stream says so.
            let boundary = (s + 1 < self.count).then(|| (s + 1) * self.segment_ns);
            let done = |t: &Track| {
                self.reached.get(&t.id).is_some_and(|&r| r > s)
                    || boundary.is_some_and(|b| {
                        self.reached.get(&t.id) == Some(&s)
                            && self.ends.get(&t.id).is_some_and(|&e| e + SLACK_NS >= b)
                    })
            };
            let all_past = self.tracks.iter().all(done);
            let reached: Vec<u64> = self
                .tracks
                .iter()
                .map(|t| self.reached.get(&t.id).copied().unwrap_or(0))
                .collect();
            let one_far = reached.iter().any(|&r| r > s + 2);
            if !(all_past || one_far) {
                break;
            }
            let runs = self.pending.remove(&s).expect("key just seen");
            out.push(self.segment(s, runs));
        }
    }

    /// At the end of the stream every pending segment is complete.
    fn finish(&mut self) -> Vec<Cut> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(s, runs)| self.segment(s, runs))
            .collect()
    }
}
