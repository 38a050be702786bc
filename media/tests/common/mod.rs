//! Test sources generated with gst-launch-1.0 (nothing is downloaded) and ffprobe helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Scratch directory for generated sources, one per test binary.
fn dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// Path of the named test source, generated on first use (each test binary only pays for
/// the sources it uses). Names:
/// `av1080.mp4` 2 s 1920x1080 H.264+AAC; `av360_long.mp4` 12 s 640x360 H.264+AAC;
/// `av360.mp4` 2 s 640x360 H.264+AAC; `video_only.mkv` 2 s 1280x720 H.264 in Matroska;
/// `audio_only.m4a` 2 s AAC; `notes.txt` text; `fake.mp4` the same text named .mp4;
/// `ball.mp4` 6 s 640x360 moving ball (a different picture every frame) H.264+AAC with a
/// keyframe every 3 s; `odd.mkv` 1 s 321x241 MJPEG; `anamorphic.mp4` 1 s 320x240 H.264
/// with 2:1 pixels (shown 640x240).
pub fn source(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = dir().join(name);
    if path.exists() {
        return path;
    }
    let text = "This is not a video.\n".repeat(200);
    match name {
        "av1080.mp4" => make_mp4(&path, 1920, 1080, 2, true),
        "av360_long.mp4" => make_mp4(&path, 640, 360, 12, true),
        "av360.mp4" => make_mp4(&path, 640, 360, 2, true),
        "ball.mp4" => make_mp4_with(&path, "ball", (640, 360), 6, 90, true),
        "odd.mkv" => gst_launch(&format!(
            "videotestsrc num-buffers=30 pattern=ball ! \
             video/x-raw,width=321,height=241,framerate=30/1 ! jpegenc ! matroskamux ! \
             filesink location={}",
            path.display()
        )),
        "anamorphic.mp4" => gst_launch(&format!(
            "videotestsrc num-buffers=30 pattern=smpte ! \
             video/x-raw,width=320,height=240,framerate=30/1,pixel-aspect-ratio=2/1 ! \
             x264enc speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location={}",
            path.display()
        )),
        "video_only.mkv" => gst_launch(&format!(
            "videotestsrc num-buffers=60 pattern=ball ! \
             video/x-raw,width=1280,height=720,framerate=30/1 ! \
             x264enc speed-preset=ultrafast ! h264parse ! matroskamux ! filesink location={}",
            path.display()
        )),
        "audio_only.m4a" => gst_launch(&format!(
            "audiotestsrc num-buffers=94 samplesperbuffer=1024 ! \
             audio/x-raw,rate=48000,channels=2 ! audioconvert ! {} ! aacparse ! mp4mux ! \
             filesink location={}",
            aac(),
            path.display()
        )),
        "notes.txt" | "fake.mp4" => std::fs::write(&path, &text).unwrap(),
        other => panic!("unknown test source {other}"),
    }
    path
}

/// AAC encoder available for test sources (same preference as the crate).
fn aac() -> &'static str {
    let ok = Command::new("gst-inspect-1.0")
        .arg("avenc_aac")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok { "avenc_aac" } else { "voaacenc" }
}

/// The H.264 encoder `EncoderChoice::Auto` must pick on this machine, found without the crate:
/// `vaapih264enc` when gst-launch-1.0 encodes frames with it here (element present and a VA
/// display opens), else `x264enc` when it does, else `openh264enc`.
pub fn expected_auto_encoder() -> &'static str {
    static PICK: OnceLock<&'static str> = OnceLock::new();
    PICK.get_or_init(|| {
        let encodes = |tail: &str| {
            let pipeline =
                format!("videotestsrc num-buffers=2 ! video/x-raw,width=320,height=240{tail}");
            Command::new("gst-launch-1.0")
                .arg("-q")
                .args(pipeline.split_whitespace())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if encodes(",format=NV12 ! vaapih264enc ! fakesink") {
            "vaapih264enc"
        } else if encodes(" ! x264enc ! fakesink") {
            "x264enc"
        } else {
            "openh264enc"
        }
    })
}

/// Path of `name`, generated once per test binary by ffmpeg with `args` (for sources
/// gst-launch cannot make, such as keyframes at chosen times).
pub fn ffmpeg_source(name: &str, args: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = dir().join(name);
    if !path.exists() {
        stdout_of(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(args.split_whitespace())
                .arg(&path),
        );
    }
    path
}

/// Runs a tool (ffmpeg, ffprobe) and returns its standard output; panics with its standard
/// error when it fails or cannot be started.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs gst-launch-1.0 with a pipeline description, panicking with its output on failure.
pub fn gst_launch(pipeline: &str) {
    let args: Vec<&str> = pipeline.split_whitespace().collect();
    let out = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(&args)
        .output()
        .expect("gst-launch-1.0 (gstreamer1.0-tools) must be installed");
    assert!(
        out.status.success(),
        "gst-launch failed: {pipeline}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An H.264 (+ AAC) MP4 of `w`x`h` at 30 fps lasting `secs`.
fn make_mp4(path: &Path, w: u32, h: u32, secs: u32, audio: bool) {
    make_mp4_with(path, "smpte", (w, h), secs, 60, audio);
}

/// An H.264 (+ AAC) MP4 of videotestsrc `pattern` at 30 fps lasting `secs`, with a
/// keyframe at least every `key_int` frames.
fn make_mp4_with(
    path: &Path,
    pattern: &str,
    (w, h): (u32, u32),
    secs: u32,
    key_int: u32,
    audio: bool,
) {
    let frames = secs * 30;
    // 48 kHz in 1024-sample buffers: 46.875 buffers per second.
    let audio_buffers = (secs * 48_000).div_ceil(1024);
    let mut desc = format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! \
         video/x-raw,width={w},height={h},framerate=30/1 ! \
         x264enc speed-preset=ultrafast key-int-max={key_int} ! h264parse ! queue ! \
         mp4mux name=m ! filesink location={}",
        path.display()
    );
    if audio {
        desc.push_str(&format!(
            " audiotestsrc num-buffers={audio_buffers} samplesperbuffer=1024 ! \
             audio/x-raw,rate=48000,channels=2 ! audioconvert ! {} ! aacparse ! queue ! m.",
            aac()
        ));
    }
    gst_launch(&desc);
}

/// One stream as ffprobe reports it.
#[derive(Debug)]
pub struct ProbedStream {
    pub codec_type: String,
    pub codec_name: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
}

/// Streams of `path` according to ffprobe (the ffmpeg package).
pub fn ffprobe_streams(path: &Path) -> Vec<ProbedStream> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (ffmpeg) must be installed");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["streams"]
        .as_array()
        .expect("streams array")
        .iter()
        .map(|s| ProbedStream {
            codec_type: s["codec_type"].as_str().unwrap_or_default().to_string(),
            codec_name: s["codec_name"].as_str().unwrap_or_default().to_string(),
            width: s["width"].as_u64(),
            height: s["height"].as_u64(),
        })
        .collect()
}

/// Top-level MP4 box types in order (to check the fragmented layout).
pub fn mp4_boxes(data: &[u8]) -> Vec<String> {
    let mut boxes = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&data[pos + 4..pos + 8]).to_string();
        boxes.push(kind);
        if size < 8 {
            break;
        }
        pos += size;
    }
    boxes
}

/// Bytes of the first box of type `tag` anywhere in `b`, minus creation/modification times
/// (the 8 bytes after version and flags in tkhd/mdhd).
pub fn sample_entry(b: &[u8], tag: &[u8]) -> Vec<u8> {
    let i = b.windows(4).position(|w| w == tag).expect("box present") - 4;
    let size = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let mut out = b[i..i + size].to_vec();
    if tag == b"tkhd" || tag == b"mdhd" {
        out[12..20].fill(0);
    }
    out
}

/// Asserts that two init segments describe the same tracks (codec configuration, track
/// header, media header, handler), creation and modification times aside.
pub fn assert_same_tracks(a: &[u8], b: &[u8]) {
    for tag in [&b"avcC"[..], b"esds", b"tkhd", b"mdhd", b"hdlr"] {
        assert_eq!(
            sample_entry(a, tag),
            sample_entry(b, tag),
            "{}",
            String::from_utf8_lossy(tag)
        );
    }
}
