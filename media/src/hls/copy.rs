//! Stream copy: the `original` entry of the ladder for sources that are already H.264
//! (with AAC or no audio) in MP4, Matroska or MPEG-TS, cut from the source at its own
//! keyframes without decoding or encoding anything.
//!
//! - One demux pass reads the sample table ([`CopyIndex::scan`]): every video sample's
//!   presentation time, size and keyframe flag, every audio sample's time and size, and
//!   the codec configuration. The service keeps it per ETag.
//! - Segments run from keyframe to keyframe, grouped to about [`SEGMENT_DURATION`]; audio
//!   samples belong to the segment their presentation time falls in, so the segments
//!   partition both tracks: no gap, no double at a cut.
//! - A segment is one short demux run (seek a little before it, keep exactly its samples,
//!   checked against the index) written by `mux.rs` with decode times from the index, so
//!   segments from separate runs join exactly.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::SEGMENT_DURATION;
use super::demux::{Demux, Pulled, Track};
use super::mux::{self, FragSample, FragTrack, TrackConfig, VIDEO_TIMESCALE};
use crate::MediaError;
use crate::probe::MediaInfo;

/// A segment's run seeks this far before the segment's keyframe: demuxers seek to the
/// keyframe before a position, and MPEG-TS seeks are approximate.
const PRE_SEEK_NS: u64 = 1_000_000_000;
/// Timestamps of the same sample read twice agree within this (MPEG-TS rounding).
const MATCH_NS: u64 = 1_000_000;
/// Bytes of `moof` per sample (one `trun` entry), for the announced bandwidth.
const TRUN_ENTRY: u64 = 16;

/// Whether the probe says the source may be stream-copied (the scan decides for sure).
pub fn may_copy(info: &MediaInfo) -> bool {
    let audio = !info.has_audio || info.audio_codec.as_deref() == Some("aac");
    demuxer(info).is_some()
        && audio
        && info.has_video
        && info.video_codec.as_deref() == Some("h264")
}

/// The demuxer of a container stream copy reads. Named rather than autoplugged: parsebin
/// would put h264parse after it, which rewrites the first access unit.
fn demuxer(info: &MediaInfo) -> Option<&'static str> {
    match info.container.as_deref()? {
        "mp4" | "mov" => Some("qtdemux"),
        "matroska" => Some("matroskademux"),
        "mpegts" => Some("tsdemux"),
        _ => None,
    }
}

/// One sample read from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    /// Presentation time on the source timeline (stream time), ns.
    pts: u64,
    size: u32,
    keyframe: bool,
}

/// One copied segment: a range of each track's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySegment {
    /// Presentation time of its first keyframe, ns.
    pub start_ns: u64,
    /// Presentation time of the next segment's keyframe (or the end), ns.
    pub end_ns: u64,
    video: std::ops::Range<usize>,
    audio: std::ops::Range<usize>,
    /// Size of the segment file.
    bytes: u64,
}

/// What the demux pass found, and the segments cut from it.
#[derive(Debug)]
pub struct CopyIndex {
    demuxer: &'static str,
    avcc: Vec<u8>,
    width: u32,
    height: u32,
    /// `(AudioSpecificConfig, rate, channels)` when the source has AAC audio.
    aac: Option<(Vec<u8>, u32, u32)>,
    video: Vec<Sample>,
    /// Per video sample: decode time and duration (90 kHz), presentation offset.
    video_times: Vec<(u64, u32, i32)>,
    audio: Vec<Sample>,
    /// Per audio sample: decode time and duration (its sample rate).
    audio_times: Vec<(u64, u32)>,
    /// The segments, in order.
    pub segments: Vec<CopySegment>,
    /// RFC 6381 codecs, e.g. `avc1.64001F,mp4a.40.2`.
    pub codecs: String,
}

impl CopyIndex {
    /// Reads the sample table of `src` (one demux pass, no decoding). `Ok(None)` when the
    /// source turns out not to be copyable: an H.264 profile browsers do not play (High 10,
    /// 4:2:2, 4:4:4), a configuration that changes midway, no keyframe first, no timestamps.
    pub(crate) fn scan(
        src: &Path,
        info: &MediaInfo,
        active: Arc<AtomicUsize>,
    ) -> Result<Option<CopyIndex>, MediaError> {
        let Some(demuxer) = demuxer(info) else {
            return Ok(None);
        };
        let mut demux = Demux::open(src, demuxer, info.has_audio, false, active)?;
        demux.play(None)?;
        let mut video = Vec::new();
        let mut audio = Vec::new();
        let mut durations = (0u64, 0u64);
        while let Some(p) = demux.next()? {
            let Some(pts) = p.pts else {
                return Ok(None);
            };
            let s = Sample {
                pts,
                size: p.size,
                keyframe: p.keyframe,
            };
            match p.track {
                Track::Video => {
                    video.push(s);
                    durations.0 = p.duration.unwrap_or(durations.0);
                }
                Track::Audio => {
                    audio.push(s);
                    durations.1 = p.duration.unwrap_or(durations.1);
                }
            }
        }
        let caps = demux.state.lock().unwrap().clone();
        drop(demux);
        if caps.changed || video.is_empty() || !video[0].keyframe {
            return Ok(None);
        }
        let Some(avcc) = caps.avcc else {
            return Ok(None);
        };
        // avcC: version, profile_idc, constraint flags, level_idc, ...
        let [_, profile, compat, level, ..] = avcc[..] else {
            return Ok(None);
        };
        // Baseline, Main, Extended and High are 8-bit 4:2:0: what browsers decode.
        if !matches!(profile, 66 | 77 | 88 | 100) {
            return Ok(None);
        }
        let mut codecs = format!("avc1.{profile:02X}{compat:02X}{level:02X}");
        let aac = match (audio.is_empty(), caps.asc) {
            (true, _) => None,
            (false, Some(asc)) if !asc.is_empty() => {
                // audioObjectType: the first five bits (LC 2, HE 5, HE v2 29 are signalled
                // as such; 31 escapes to a longer form browsers do not play).
                let aot = asc[0] >> 3;
                if !matches!(aot, 2 | 5 | 29) {
                    return Ok(None);
                }
                codecs.push_str(&format!(",mp4a.40.{aot}"));
                Some((asc, caps.rate, caps.channels))
            }
            (false, _) => return Ok(None),
        };
        if aac
            .as_ref()
            .is_some_and(|(_, rate, ch)| *rate == 0 || *ch == 0)
        {
            return Ok(None);
        }
        let video_times = video_times(&video, durations.0);
        let audio_times = match &aac {
            Some((_, rate, _)) => audio_times(&audio, *rate, durations.1),
            None => {
                audio.clear();
                Vec::new()
            }
        };
        let mut index = CopyIndex {
            demuxer,
            avcc,
            width: caps.width,
            height: caps.height,
            aac,
            video,
            video_times,
            audio,
            audio_times,
            segments: Vec::new(),
            codecs,
        };
        index.segments = index.cut(SEGMENT_DURATION.as_nanos() as u64);
        Ok(Some(index))
    }

    /// Groups keyframe to keyframe spans into segments of about `target` ns: a segment ends
    /// at the keyframe nearest to its start plus `target` (the end of the stream counts as
    /// one, so the last segment is not much longer than the others).
    fn cut(&self, target: u64) -> Vec<CopySegment> {
        let end_ns = self
            .video
            .iter()
            .zip(&self.video_times)
            .map(|(s, t)| s.pts + u64::from(t.1) * 1_000_000_000 / u64::from(VIDEO_TIMESCALE))
            .max()
            .unwrap_or(0);
        // Every keyframe after the first, then the end of the stream, as places to cut.
        let places = (1..self.video.len())
            .filter(|&i| self.video[i].keyframe)
            .map(|i| (Some(i), self.video[i].pts))
            .chain([(None, end_ns)]);
        let mut starts = vec![0];
        // The last keyframe passed since the current segment's start.
        let mut passed: Option<(usize, u64)> = None;
        for (key, at) in places {
            let start = self.video[*starts.last().expect("never empty")].pts;
            if at >= start + target {
                // The keyframe passed is nearer the target than this place: end there.
                if let Some((p, p_at)) = passed
                    && start + target - p_at < at - start - target
                {
                    starts.push(p);
                    passed = None;
                }
                let start = self.video[*starts.last().expect("never empty")].pts;
                if let Some(k) = key
                    && at >= start + target
                {
                    starts.push(k);
                    passed = None;
                    continue;
                }
            }
            if let Some(k) = key {
                passed = Some((k, at));
            }
        }
        let mut segments = Vec::with_capacity(starts.len());
        let mut audio_at = 0;
        for (n, &first) in starts.iter().enumerate() {
            let last = starts.get(n + 1).copied().unwrap_or(self.video.len());
            let start_ns = self.video[first].pts;
            let seg_end = starts.get(n + 1).map_or(end_ns, |&k| self.video[k].pts);
            let audio_end = if n + 1 == starts.len() {
                self.audio.len()
            } else {
                audio_at + self.audio[audio_at..].partition_point(|a| a.pts < seg_end)
            };
            let samples = (last - first + audio_end - audio_at) as u64;
            let data: u64 = self.video[first..last]
                .iter()
                .chain(&self.audio[audio_at..audio_end])
                .map(|s| u64::from(s.size))
                .sum();
            segments.push(CopySegment {
                start_ns,
                end_ns: seg_end.max(start_ns + 1),
                video: first..last,
                audio: audio_at..audio_end,
                bytes: data + samples * TRUN_ENTRY + 200,
            });
            audio_at = audio_end;
        }
        segments
    }

    /// Whether segments carry an audio track.
    pub fn has_audio(&self) -> bool {
        self.aac.is_some()
    }

    /// Video size in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// HLS `BANDWIDTH` and `AVERAGE-BANDWIDTH` (bit/s): the largest segment's rate, and the
    /// whole stream's, both from the segment files' sizes.
    pub fn bandwidth(&self) -> (u64, u64) {
        let rate = |bytes: u64, ns: u64| bytes * 8 * 1_000_000_000 / ns.max(1);
        let peak = self
            .segments
            .iter()
            .map(|s| rate(s.bytes, s.end_ns - s.start_ns))
            .max()
            .unwrap_or(0);
        let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let span = match (self.segments.first(), self.segments.last()) {
            (Some(a), Some(b)) => b.end_ns - a.start_ns,
            _ => 1,
        };
        (peak, rate(total, span))
    }

    /// The init segment.
    pub(crate) fn init_segment(&self) -> Vec<u8> {
        let mut tracks = vec![TrackConfig::Avc {
            avcc: &self.avcc,
            width: self.width,
            height: self.height,
        }];
        if let Some((asc, rate, channels)) = &self.aac {
            tracks.push(TrackConfig::Aac {
                asc,
                rate: *rate,
                channels: *channels,
            });
        }
        mux::init_segment(&tracks)
    }

    /// Media segment `n`, its samples read from `src` by one demux run.
    pub(crate) fn segment(
        &self,
        src: &Path,
        n: usize,
        active: Arc<AtomicUsize>,
    ) -> Result<Vec<u8>, MediaError> {
        let seg = self
            .segments
            .get(n)
            .ok_or(MediaError::NoSuchSegment(n as u64))?;
        let mut demux = Demux::open(src, self.demuxer, self.aac.is_some(), true, active)?;
        let seek = (n > 0).then(|| seg.start_ns.saturating_sub(PRE_SEEK_NS));
        demux.play(seek)?;
        let want_video = &self.video[seg.video.clone()];
        let want_audio = &self.audio[seg.audio.clone()];
        let mut video = Taker::new(want_video);
        let mut audio = Taker::new(want_audio);
        while !(video.done() && audio.done()) {
            let Some(p) = demux.next()? else {
                break;
            };
            match p.track {
                Track::Video => video.offer(p)?,
                Track::Audio => audio.offer(p)?,
            }
        }
        drop(demux);
        if !(video.done() && audio.done()) {
            return Err(copy_error(format!(
                "segment {n}: the source ended before all its samples were read"
            )));
        }
        let frag = |times: &[(u64, u32, i32)], samples: &[Sample]| -> Vec<FragSample> {
            samples
                .iter()
                .zip(times)
                .map(|(s, t)| FragSample {
                    duration: t.1,
                    size: s.size,
                    keyframe: s.keyframe,
                    cto: t.2,
                })
                .collect()
        };
        let video_samples = frag(&self.video_times[seg.video.clone()], want_video);
        let mut tracks = vec![FragTrack {
            track_id: 1,
            decode_time: self.video_times[seg.video.start].0,
            samples: &video_samples,
            data: &video.data,
        }];
        let audio_samples: Vec<FragSample>;
        if self.aac.is_some() && !seg.audio.is_empty() {
            let times: Vec<(u64, u32, i32)> = self.audio_times[seg.audio.clone()]
                .iter()
                .map(|&(t, d)| (t, d, 0))
                .collect();
            audio_samples = frag(&times, want_audio);
            tracks.push(FragTrack {
                track_id: 2,
                decode_time: self.audio_times[seg.audio.start].0,
                samples: &audio_samples,
                data: &audio.data,
            });
        }
        Ok(mux::fragment(n as u32 + 1, &tracks))
    }
}

/// Video decode times in 90 kHz: the presentation times in ascending order (so the first
/// decode time is the first presentation time, and B-frames get negative offsets, CMAF's
/// `trun` version 1), each sample lasting until the next.
fn video_times(video: &[Sample], last_duration_ns: u64) -> Vec<(u64, u32, i32)> {
    let ticks = |ns: u64| to_ticks(ns, VIDEO_TIMESCALE);
    let pts: Vec<u64> = video.iter().map(|s| ticks(s.pts)).collect();
    let mut dts = pts.clone();
    dts.sort_unstable();
    let last = ticks(last_duration_ns).max(1);
    (0..pts.len())
        .map(|i| {
            let duration = dts.get(i + 1).map_or(last, |next| next - dts[i]);
            let cto = pts[i] as i64 - dts[i] as i64;
            (dts[i], duration as u32, cto as i32)
        })
        .collect()
}

/// `ns` in ticks of `rate`, to the nearest: demuxers round the ns of a tick count either
/// way, so rounding up or down would make some samples a tick longer or shorter.
fn to_ticks(ns: u64, rate: u32) -> u64 {
    ((u128::from(ns) * u128::from(rate) + 500_000_000) / 1_000_000_000) as u64
}

/// Audio decode times in the sample rate, each sample lasting until the next.
fn audio_times(audio: &[Sample], rate: u32, last_duration_ns: u64) -> Vec<(u64, u32)> {
    let ticks = |ns: u64| to_ticks(ns, rate);
    let t: Vec<u64> = audio.iter().map(|s| ticks(s.pts)).collect();
    let last = ticks(last_duration_ns).max(1);
    (0..t.len())
        .map(|i| {
            let d = t.get(i + 1).map_or(last, |next| next.saturating_sub(t[i]));
            (t[i], d as u32)
        })
        .collect()
}

/// Picks one track's samples of a segment out of a demux run: skips what comes before the
/// first (a seek lands on an earlier keyframe), then takes exactly as many as the index
/// lists, checking each against it.
struct Taker<'a> {
    want: &'a [Sample],
    got: usize,
    data: Vec<u8>,
}

impl<'a> Taker<'a> {
    fn new(want: &'a [Sample]) -> Self {
        Taker {
            want,
            got: 0,
            data: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.got == self.want.len()
    }

    fn offer(&mut self, p: Pulled) -> Result<(), MediaError> {
        if self.done() {
            return Ok(());
        }
        let pts = p.pts.unwrap_or(0);
        let expected = self.want[self.got];
        if self.got == 0 {
            // Before the segment's first sample (for video: a keyframe, earlier ones only).
            if pts + MATCH_NS < expected.pts || (expected.keyframe && !p.keyframe) {
                if p.keyframe && pts > expected.pts + MATCH_NS {
                    return Err(copy_error(format!(
                        "the source has no keyframe at {} ns any more",
                        expected.pts
                    )));
                }
                return Ok(());
            }
            if pts > expected.pts + MATCH_NS {
                return Err(copy_error(format!(
                    "a seek went past the sample at {} ns",
                    expected.pts
                )));
            }
        }
        if p.size != expected.size || pts.abs_diff(expected.pts) > MATCH_NS {
            return Err(copy_error(format!(
                "sample {} differs from the index (size {} vs {}, at {pts} vs {} ns)",
                self.got, p.size, expected.size, expected.pts
            )));
        }
        let buffer = p.buffer.expect("segment runs keep the data");
        let map = buffer
            .map_readable()
            .map_err(|_| copy_error("unreadable buffer".into()))?;
        self.data.extend_from_slice(map.as_slice());
        self.got += 1;
        Ok(())
    }
}

pub(super) fn copy_error(msg: String) -> MediaError {
    MediaError::Pipeline(format!("stream copy: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(keys_at: &[u64], frames: u64, frame_ns: u64, audio_ns: u64) -> CopyIndex {
        let video: Vec<Sample> = (0..frames)
            .map(|i| Sample {
                pts: i * frame_ns,
                size: 10,
                keyframe: keys_at.contains(&i),
            })
            .collect();
        let audio: Vec<Sample> = (0..(frames * frame_ns / audio_ns))
            .map(|i| Sample {
                pts: i * audio_ns,
                size: 4,
                keyframe: true,
            })
            .collect();
        CopyIndex {
            demuxer: "qtdemux",
            avcc: vec![1, 100, 0, 31],
            width: 320,
            height: 180,
            aac: Some((vec![0x11, 0x90], 48_000, 2)),
            video_times: video_times(&video, frame_ns),
            audio_times: audio_times(&audio, 48_000, audio_ns),
            video,
            audio,
            segments: Vec::new(),
            codecs: String::new(),
        }
    }

    #[test]
    fn segments_follow_keyframes_and_partition_both_tracks() {
        // 25 fps, keyframes at 0, 1.2, 2, 5, 9, 9.6, 12 s; 14 s.
        let frame = 40_000_000;
        let idx = index(&[0, 30, 50, 125, 225, 240, 300], 350, frame, 21_333_333);
        let segs = idx.cut(3_200_000_000);
        let starts: Vec<u64> = segs.iter().map(|s| s.start_ns / 100_000_000).collect();
        // 0 → 2 s is nearer 3.2 than 5 is? |3.2-2|=1.2 < |5-3.2|=1.8: cut at 2; from 2,
        // target 5.2: 5 is nearest; from 5: 8.2, 9 is nearest; from 9: 12.2, 12.
        assert_eq!(starts, vec![0, 20, 50, 90, 120]);
        let mut v = 0;
        let mut a = 0;
        for s in &segs {
            assert_eq!(s.video.start, v);
            assert_eq!(s.audio.start, a);
            assert!(idx.video[s.video.start].keyframe);
            assert!(
                idx.audio[s.audio.clone()]
                    .iter()
                    .all(|x| x.pts >= s.start_ns || s.start_ns == 0)
            );
            assert!(
                idx.audio[s.audio.clone()]
                    .iter()
                    .all(|x| x.pts < s.end_ns || s.end_ns == segs.last().unwrap().end_ns)
            );
            v = s.video.end;
            a = s.audio.end;
        }
        assert_eq!((v, a), (idx.video.len(), idx.audio.len()));
        assert_eq!(segs.last().unwrap().end_ns, 350 * frame);
    }

    #[test]
    fn decode_times_are_sorted_presentation_times() {
        // I P B B in decode order, 3000 ticks apart.
        let ns = |f: u64| f * 1_000_000_000 / 30;
        let v = [0, 3, 1, 2].map(|f| Sample {
            pts: ns(f),
            size: 1,
            keyframe: f == 0,
        });
        let t = video_times(&v, ns(1));
        assert_eq!(
            t,
            vec![
                (0, 3000, 0),
                (3000, 3000, 6000),
                (6000, 3000, -3000),
                (9000, 3000, -3000)
            ]
        );
    }
}
