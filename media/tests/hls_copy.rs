//! Stream copy (`quality=original`): segments cut from an H.264/AAC source at its own,
//! uneven keyframes, with no encoder, checked with ffprobe and ffmpeg.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nebula_media::hls::{CopyIndex, SegmentId};
use nebula_media::{EncoderChoice, MediaEngine};

use common::{ffmpeg_source, stdout_of};

fn engine() -> &'static MediaEngine {
    static ENGINE: OnceLock<MediaEngine> = OnceLock::new();
    ENGINE.get_or_init(|| MediaEngine::new(EncoderChoice::Auto).unwrap())
}

/// 12 s 320x180 30 fps H.264 High with B-frames and keyframes only at 0, 1.2, 2, 5, 9 and
/// 9.6 s (no scene cuts, no regular GOP), 48 kHz AAC: segments of about 3.2 s must be
/// cut at 2, 5 and 9 s.
fn uneven_source(ext: &str) -> PathBuf {
    ffmpeg_source(
        &format!("copy_uneven.{ext}"),
        "-f lavfi -i testsrc2=size=320x180:rate=30:duration=12 \
         -f lavfi -i sine=frequency=440:sample_rate=48000:duration=12 \
         -c:v libx264 -preset veryfast -bf 2 -g 1000 -sc_threshold 0 \
         -force_key_frames 0,1.2,2,5,9,9.6 -pix_fmt yuv420p -c:a aac -b:a 64k",
    )
}

fn index_of(src: &Path) -> Option<CopyIndex> {
    let info = engine().probe(src).unwrap();
    engine().copy_index(src, &info).unwrap()
}

/// `(pts, dts, flags)` of every packet of one stream, in decode order.
fn stream_packets(path: &Path, stream: &str) -> Vec<(f64, f64, String)> {
    let out = stdout_of(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", stream])
            .args([
                "-show_entries",
                "packet=pts_time,dts_time,flags",
                "-of",
                "csv=p=0",
            ])
            .arg(path),
    );
    // MPEG-TS packets add a trailing field and blank lines (side data).
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split(',');
            let pts = f.next().unwrap().parse().unwrap();
            let dts = f.next().unwrap().parse().unwrap_or(pts);
            (pts, dts, f.next().unwrap_or("").to_string())
        })
        .collect()
}

/// MD5 of every packet's data of one stream, in decode order (`ffmpeg -c copy -f framemd5`).
fn packet_hashes(path: &Path, stream: &str) -> Vec<String> {
    let out = stdout_of(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args([
                "-map",
                &format!("0:{stream}"),
                "-c",
                "copy",
                "-f",
                "framemd5",
                "-",
            ]),
    );
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(',').next().unwrap().trim().to_string())
        .collect()
}

fn write(path: &Path, parts: &[&[u8]]) {
    std::fs::write(path, parts.concat()).unwrap();
}

#[test]
fn uneven_gops_are_copied_byte_for_byte_without_an_encoder() {
    let src = uneven_source("mp4");
    let index = index_of(&src).expect("an H.264/AAC MP4 can be copied");
    let starts: Vec<u64> = index
        .segments
        .iter()
        .map(|s| s.start_ns / 100_000_000)
        .collect();
    assert_eq!(
        starts,
        vec![0, 20, 50, 90],
        "cuts at the keyframes nearest 3.2 s"
    );
    assert!(index.codecs.starts_with("avc1.64"), "{}", index.codecs);
    assert!(index.codecs.ends_with(",mp4a.40.2"), "{}", index.codecs);
    let (peak, average) = index.bandwidth();
    assert!(peak >= average && average > 0);

    let encoders = MediaEngine::encoders_started();
    let dir = tempfile::tempdir().unwrap();
    let init = engine()
        .copy_segment(&src, &index, SegmentId::Init)
        .unwrap();
    let count = index.segments.len() as u64;
    // Out of order, each its own run: a seek-restart per segment.
    let mut segs = vec![Vec::new(); count as usize];
    for n in [2, 0, 3, 1] {
        segs[n as usize] = engine()
            .copy_segment(&src, &index, SegmentId::Media(n))
            .unwrap();
    }
    assert_eq!(
        MediaEngine::encoders_started(),
        encoders,
        "a stream copy starts no encoder"
    );
    // Every segment alone (with the init segment) starts with a keyframe at its start.
    for (n, seg) in segs.iter().enumerate() {
        let one = dir.path().join(format!("one{n}.mp4"));
        write(&one, &[&init, seg]);
        let video = stream_packets(&one, "v:0");
        assert!(
            video[0].2.contains('K'),
            "segment {n} starts with a keyframe"
        );
        // Its decode time is its keyframe's place on the source timeline.
        let want = index.segments[n].start_ns as f64 / 1e9;
        let first = video[0].1;
        assert!(
            (first - want).abs() < 0.002,
            "segment {n} starts at {first}, not {want}"
        );
    }
    // Again, in order: the same bytes.
    assert_eq!(
        engine()
            .copy_segment(&src, &index, SegmentId::Media(1))
            .unwrap(),
        segs[1]
    );

    let all = dir.path().join("all.mp4");
    let parts: Vec<&[u8]> = std::iter::once(init.as_slice())
        .chain(segs.iter().map(Vec::as_slice))
        .collect();
    write(&all, &parts);
    // The samples are the source's, byte for byte: every video sample; the audio samples
    // the source presents (its edit list leaves out the AAC priming frame at the start and
    // the padding frame at the end, which no segment carries).
    for stream in ["v:0", "a:0"] {
        let theirs = packet_hashes(&src, stream);
        let ours = packet_hashes(&all, stream);
        let from = theirs.iter().position(|h| *h == ours[0]).unwrap();
        let slack = if stream == "v:0" { 0 } else { 2 };
        assert!(
            from <= slack / 2 && ours.len() + slack >= theirs.len(),
            "{stream}: {} of the source's {} packets, from {from}",
            ours.len(),
            theirs.len()
        );
        let differ: Vec<usize> = (0..ours.len())
            .filter(|&i| ours[i] != theirs[from + i])
            .collect();
        assert!(
            differ.is_empty(),
            "{stream} packets {differ:?} differ from the source's"
        );
    }
    // Presentation times are the source's: no gap, no overlap across the cuts. (FFmpeg
    // reads CMAF's negative composition offsets, B-frames before their reference, by
    // delaying the whole video track by the largest one, as it does for its own CMAF
    // output: compared up to that constant.)
    for stream in ["v:0", "a:0"] {
        let mut theirs: Vec<f64> = stream_packets(&src, stream).iter().map(|p| p.0).collect();
        let mut ours: Vec<f64> = stream_packets(&all, stream).iter().map(|p| p.0).collect();
        theirs.sort_by(f64::total_cmp);
        ours.sort_by(f64::total_cmp);
        // Past the priming frame the source presents before zero.
        let from = theirs.iter().position(|t| *t >= -0.0005).unwrap();
        let theirs = &theirs[from..];
        let shift = ours[0] - theirs[0];
        assert!((0.0..0.1).contains(&shift), "{stream} shifted by {shift} s");
        for (a, b) in ours.iter().zip(theirs) {
            assert!(
                (a - b - shift).abs() < 0.0015,
                "{stream}: {a} against the source's {b}"
            );
        }
    }
    // AAC frames follow each other exactly (1024 samples), across every cut.
    let audio: Vec<f64> = stream_packets(&all, "a:0").iter().map(|p| p.0).collect();
    for w in audio.windows(2) {
        let step = w[1] - w[0];
        assert!(
            (step - 1024.0 / 48_000.0).abs() < 2e-6,
            "audio step {step} at {}",
            w[0]
        );
    }
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&all)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn matroska_and_mpegts_sources_are_copied() {
    for ext in ["mkv", "ts"] {
        let src = uneven_source(ext);
        let index = index_of(&src).unwrap_or_else(|| panic!("{ext} can be copied"));
        assert_eq!(index.segments.len(), 4, "{ext}");
        let dir = tempfile::tempdir().unwrap();
        let mut segs = vec![Vec::new(); 4];
        for n in (0..4).rev() {
            segs[n] = engine()
                .copy_segment(&src, &index, SegmentId::Media(n as u64))
                .unwrap();
        }
        let mut bytes = engine()
            .copy_segment(&src, &index, SegmentId::Init)
            .unwrap();
        bytes.extend(segs.concat());
        let all = dir.path().join("all.mp4");
        std::fs::write(&all, &bytes).unwrap();
        assert_eq!(
            stream_packets(&all, "v:0").len(),
            stream_packets(&src, "v:0").len(),
            "{ext}"
        );
    }
}

#[test]
fn other_codecs_are_not_copied() {
    let vp8 = ffmpeg_source(
        "copy_vp8.webm",
        "-f lavfi -i testsrc2=size=160x90:rate=25:duration=2 -c:v libvpx -b:v 200k",
    );
    assert!(index_of(&vp8).is_none());
    let mjpeg = common::source("odd.mkv");
    assert!(index_of(&mjpeg).is_none());
}
