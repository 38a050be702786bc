//! Test sources generated with gst-launch-1.0 (nothing is downloaded) and ffprobe helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Directory with the generated sources, created once per test binary.
pub struct Sources {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Sources {
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

static SOURCES: OnceLock<Sources> = OnceLock::new();

/// AAC encoder available for test sources (same preference as the crate).
fn aac() -> &'static str {
    let ok = Command::new("gst-inspect-1.0")
        .arg("avenc_aac")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok { "avenc_aac" } else { "voaacenc" }
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
    let frames = secs * 30;
    // 48 kHz in 1024-sample buffers: 46.875 buffers per second.
    let audio_buffers = (secs * 48_000).div_ceil(1024);
    let mut desc = format!(
        "videotestsrc num-buffers={frames} pattern=smpte ! \
         video/x-raw,width={w},height={h},framerate=30/1 ! \
         x264enc speed-preset=ultrafast key-int-max=60 ! h264parse ! queue ! \
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

/// Generates (once) every source the tests use.
pub fn sources() -> &'static Sources {
    SOURCES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        make_mp4(&root.join("av1080.mp4"), 1920, 1080, 3, true);
        make_mp4(&root.join("av720_10s.mp4"), 1280, 720, 10, true);
        make_mp4(&root.join("av360.mp4"), 640, 360, 2, true);
        gst_launch(&format!(
            "videotestsrc num-buffers=60 pattern=ball ! \
             video/x-raw,width=1280,height=720,framerate=30/1 ! \
             x264enc speed-preset=ultrafast ! h264parse ! matroskamux ! filesink location={}",
            root.join("video_only.mkv").display()
        ));
        gst_launch(&format!(
            "audiotestsrc num-buffers=94 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 ! \
             audioconvert ! {} ! aacparse ! mp4mux ! filesink location={}",
            aac(),
            root.join("audio_only.m4a").display()
        ));
        let text = "This is not a video.\n".repeat(200);
        std::fs::write(root.join("notes.txt"), &text).unwrap();
        std::fs::write(root.join("fake.mp4"), &text).unwrap();
        Sources { _dir: dir, root }
    })
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
