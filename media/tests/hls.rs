//! HLS segments from real GStreamer pipelines, checked with ffprobe.
//!
//! Sources are generated with ffmpeg: a few seconds each, small frames (CI has 2 cores).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nebula_media::hls::{AcquireRun, HlsSession, SEGMENT_DURATION, SegmentId};
use nebula_media::{EncoderChoice, MediaEngine, Quality};

use common::assert_same_tracks;
use common::ffmpeg_source;
use common::mp4_boxes;

const WAIT: Duration = Duration::from_secs(60);

fn engine() -> &'static MediaEngine {
    static ENGINE: OnceLock<MediaEngine> = OnceLock::new();
    ENGINE.get_or_init(|| MediaEngine::new(EncoderChoice::Auto).unwrap())
}

fn seg_secs() -> f64 {
    SEGMENT_DURATION.as_secs_f64()
}

/// 10 s 320x180 30 fps H.264 with 44.1 kHz AAC: four segments, the last one short, and
/// audio that must be resampled to 48 kHz.
fn av_source() -> PathBuf {
    ffmpeg_source(
        "hls_av.mp4",
        "-f lavfi -i testsrc2=size=320x180:rate=30:duration=10 \
         -f lavfi -i sine=frequency=440:sample_rate=44100:duration=10 \
         -c:v libx264 -preset ultrafast -g 90 -c:a aac -b:a 64k",
    )
}

/// 7 s, odd size 321x181, variable frame rate (a hole of frames), Matroska with a start
/// offset of 1.5 s, with audio.
fn odd_source() -> PathBuf {
    ffmpeg_source(
        "hls_odd.mkv",
        "-f lavfi -i testsrc2=size=321x181:rate=25:duration=7 \
         -f lavfi -i sine=frequency=660:sample_rate=48000:duration=7 \
         -vf select=not(between(n\\,40\\,60)) -fps_mode vfr -pix_fmt yuv420p \
         -c:v libx264 -preset ultrafast -c:a aac -output_ts_offset 1.5",
    )
}

fn unlimited() -> AcquireRun {
    Arc::new(|| Ok(Box::new(()) as Box<dyn Send>))
}

fn session(src: &Path, dir: &Path) -> HlsSession {
    let info = engine().probe(src).unwrap();
    engine()
        .hls_session(
            src.to_path_buf(),
            &info,
            Quality::P240,
            dir.to_path_buf(),
            unlimited(),
        )
        .unwrap()
}

/// Init plus the given segments, concatenated into one file.
fn concat(s: &HlsSession, segments: &[u64], out: &Path) {
    let mut bytes = std::fs::read(s.get(SegmentId::Init, WAIT).unwrap()).unwrap();
    for &n in segments {
        bytes.extend(std::fs::read(s.get(SegmentId::Media(n), WAIT).unwrap()).unwrap());
    }
    std::fs::write(out, bytes).unwrap();
}

#[derive(Debug, Clone)]
struct Packet {
    video: bool,
    pts: f64,
    dts: f64,
    duration: f64,
    key: bool,
}

fn packets(path: &Path) -> Vec<Packet> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let kinds: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(',')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,pts_time,dts_time,duration_time,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let video = kinds.iter().any(|(i, k)| i == f[0] && k == "video");
            Packet {
                video,
                pts: f[1].parse().unwrap(),
                dts: f[2].parse().unwrap(),
                duration: f[3].parse().unwrap_or(0.0),
                key: f[4].contains('K'),
            }
        })
        .collect()
}

/// Decodes the file completely; ffmpeg must report no error.
fn decodes(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn first(p: &[Packet], video: bool) -> Option<Packet> {
    p.iter()
        .filter(|p| p.video == video)
        .min_by(|a, b| a.pts.total_cmp(&b.pts))
        .cloned()
}

/// End of the last packet of a kind.
fn end(p: &[Packet], video: bool) -> f64 {
    p.iter()
        .filter(|p| p.video == video)
        .map(|p| p.pts + p.duration)
        .fold(0.0, f64::max)
}

/// Keeps a test's folder when NEBULA_KEEP_HLS is set, for looking at the segments.
fn scratch() -> tempfile::TempDir {
    let keep = std::env::var_os("NEBULA_KEEP_HLS").is_some();
    let dir = tempfile::Builder::new()
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        eprintln!("segments in {}", dir.path().display());
    }
    dir
}

/// Audio packets (1024 samples at 48 kHz) follow each other without a gap or an overlap: a
/// missing or doubled AAC frame is 21 ms; 0.5 ms of slack allows a source whose first
/// audio frame starts before zero (trimmed to start there). ffprobe gives no duration for
/// the first packet of a fragment, so packets are taken as 1024 samples.
fn audio_contiguous(p: &[Packet]) {
    let audio: Vec<&Packet> = p.iter().filter(|p| !p.video).collect();
    for w in audio.windows(2) {
        let gap = w[1].dts - w[0].dts - 1024.0 / 48_000.0;
        assert!(gap.abs() < 0.0005, "audio gap {gap} s at {}", w[1].dts);
    }
}

#[test]
fn cold_segment_starts_at_its_position() {
    let dir = scratch();
    let s = session(&av_source(), dir.path());
    assert_eq!(s.segment_count(), 4);
    let out = dir.path().join("cold.mp4");
    concat(&s, &[2], &out);
    decodes(&out);
    let p = packets(&out);
    let v = first(&p, true).unwrap();
    let a = first(&p, false).unwrap();
    let at = 2.0 * seg_secs();
    assert!(v.key, "segment does not start with a keyframe");
    assert!((v.pts - at).abs() < 1.0 / 30.0, "video starts at {}", v.pts);
    assert!((a.pts - at).abs() < 1.0 / 30.0, "audio starts at {}", a.pts);
    assert!((end(&p, true) - 3.0 * seg_secs()).abs() < 1.0 / 30.0 + 1e-3);
    audio_contiguous(&p);
}

#[test]
fn all_segments_cover_the_source_across_restarts() {
    let dir = scratch();
    let s = session(&av_source(), dir.path());
    // Cold at 2, then behind it (restart at 0), then the rest.
    s.get(SegmentId::Media(2), WAIT).unwrap();
    s.get(SegmentId::Media(0), WAIT).unwrap();
    let out = dir.path().join("all.mp4");
    concat(&s, &[0, 1, 2, 3], &out);
    decodes(&out);
    let p = packets(&out);
    assert!(
        (end(&p, true) - 10.0).abs() < 0.05,
        "video ends at {}",
        end(&p, true)
    );
    assert!(
        (end(&p, false) - 10.0).abs() < 0.05,
        "audio ends at {}",
        end(&p, false)
    );
    let (v, a) = (first(&p, true).unwrap(), first(&p, false).unwrap());
    assert!(
        v.pts.abs() < 1e-3 && a.pts.abs() < 1.0 / 30.0,
        "starts {} {}",
        v.pts,
        a.pts
    );
    audio_contiguous(&p);
    // Every segment start is a keyframe; frames are continuous (no doubles, no holes).
    let video: Vec<&Packet> = p.iter().filter(|p| p.video).collect();
    assert_eq!(video.len(), 300);
    for w in video.windows(2) {
        assert!(
            (w[1].dts - w[0].dts - 1.0 / 30.0).abs() < 1e-3,
            "video jump at {}",
            w[1].dts
        );
    }
    for n in 0..4 {
        let t = n as f64 * seg_secs();
        let k = video.iter().find(|p| p.pts >= t - 1e-3).unwrap();
        assert!(k.key, "no keyframe at segment {n} ({t} s)");
    }
    // Each segment is one moof with a traf per track, numbered n + 1, and one mdat, from
    // either run: VLC 3.0 reads every track's tfdt only so (`hls/run.rs`).
    for n in 0..4u32 {
        let seg = std::fs::read(s.get(SegmentId::Media(u64::from(n)), WAIT).unwrap()).unwrap();
        assert_eq!(mp4_boxes(&seg), ["moof", "mdat"], "segment {n}");
        let moof_len = u32::from_be_bytes(seg[0..4].try_into().unwrap()) as usize;
        assert_eq!(
            mp4_boxes(&seg[8..moof_len]),
            ["mfhd", "traf", "traf"],
            "segment {n}"
        );
        assert_eq!(u32::from_be_bytes(seg[20..24].try_into().unwrap()), n + 1);
    }
}

#[test]
fn init_segment_is_the_same_for_every_run() {
    let (d1, d2) = (scratch(), scratch());
    let a = session(&av_source(), d1.path());
    let b = session(&av_source(), d2.path());
    // Runs starting at different places.
    a.get(SegmentId::Media(0), WAIT).unwrap();
    b.get(SegmentId::Media(3), WAIT).unwrap();
    let ia = std::fs::read(a.get(SegmentId::Init, WAIT).unwrap()).unwrap();
    let ib = std::fs::read(b.get(SegmentId::Init, WAIT).unwrap()).unwrap();
    assert_same_tracks(&ia, &ib);
}

#[test]
fn audio_less_source_works() {
    let dir = scratch();
    let s = session(&common::source("video_only.mkv"), dir.path());
    let out = dir.path().join("v.mp4");
    concat(&s, &[0], &out);
    decodes(&out);
    let p = packets(&out);
    assert!(p.iter().all(|p| p.video));
    assert!(
        (end(&p, true) - 2.0).abs() < 0.05,
        "ends at {}",
        end(&p, true)
    );
}

#[test]
fn odd_size_vfr_offset_source_works() {
    let dir = scratch();
    let src = odd_source();
    let s = session(&src, dir.path());
    let n = s.segment_count();
    let out = dir.path().join("odd.mp4");
    // Cold in the middle first, then everything.
    s.get(SegmentId::Media(1), WAIT).unwrap();
    concat(&s, &(0..n).collect::<Vec<_>>(), &out);
    decodes(&out);
    let p = packets(&out);
    let (v, a) = (first(&p, true).unwrap(), first(&p, false).unwrap());
    assert!(
        (v.pts - a.pts).abs() < 1.0 / 25.0,
        "A/V start {} {}",
        v.pts,
        a.pts
    );
    assert!(
        (end(&p, true) - end(&p, false)).abs() < 0.1,
        "A/V end {} {}",
        end(&p, true),
        end(&p, false)
    );
    let streams = common::ffprobe_streams(&out);
    let video = streams.iter().find(|s| s.codec_type == "video").unwrap();
    assert_eq!((video.width, video.height), (Some(320), Some(180)));
    audio_contiguous(&p);
}

#[test]
fn past_the_end_is_an_error() {
    let dir = scratch();
    let s = session(&av_source(), dir.path());
    assert!(matches!(
        s.get(SegmentId::Media(4), WAIT),
        Err(nebula_media::MediaError::NoSuchSegment(4))
    ));
}
