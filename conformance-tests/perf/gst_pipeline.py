"""The gateway's live-transcode pipeline as gst-launch-1.0 arguments, and the test source.

``launch_args`` mirrors ``pipeline::launch_args`` in media/src/pipeline.rs (what
``MediaEngine::gst_launch_args`` returns) with the x264 encoder the gateway picks on machines
without VA-API, except that the output goes to ``fdsink fd=1`` instead of a file so the first
byte can be timed on the pipe. bench.py compares the two outputs with ffprobe and reports any
difference, so a change to pipeline.rs that is not made here shows up in the results.
"""

from __future__ import annotations

from pathlib import Path

# (height, kbit/s, x264 speed preset) per quality, as media/src/quality.rs.
QUALITIES = {
    240: (400, "superfast"),
    360: (800, "superfast"),
    480: (1500, "superfast"),
    720: (3000, "ultrafast"),
    1080: (6000, "ultrafast"),
}
FRAGMENT_MS = 1000
AUDIO_BITRATE = 128_000
KEYFRAME_SECONDS = 2.0


def output_size(src_w: int, src_h: int, target_h: int) -> tuple[int, int]:
    """quality.rs output_size: never upscale; even width keeping the aspect ratio."""
    src_w, src_h = max(src_w, 2), max(src_h, 2)
    if src_h <= target_h:
        return src_w & ~1, src_h & ~1
    h = max(target_h & ~1, 2)
    w = (src_w * h + src_h) // (2 * src_h) * 2
    return max(w, 2), h


def settings_for_height(out_h: int) -> tuple[int, str]:
    """Quality::for_output_height: the smallest quality at least that tall."""
    for height in sorted(QUALITIES):
        if height >= out_h:
            return QUALITIES[height]
    return QUALITIES[1080]


def launch_args(src: Path, width: int, height: int, fps: int, quality: int, audio_encoder: str | None) -> list[str]:
    out_w, out_h = output_size(width, height, quality)
    kbps, preset = settings_for_height(out_h)
    key_int = min(max(int(fps * KEYFRAME_SECONDS + 0.5), 1), 600)
    args = [
        "filesrc", f"location={src}", "!", "decodebin", "name=d",
        "d.", "!", "video/x-raw", "!",
        "queue", "!", "videoconvert", "!", "videoscale", "!",
        f"video/x-raw,format=I420,width={out_w},height={out_h},pixel-aspect-ratio=1/1", "!",
        "x264enc", f"speed-preset={preset}", "tune=zerolatency", f"bitrate={kbps}", f"key-int-max={key_int}", "!",
        "h264parse", "!", "queue", "!", "mux.",
    ]
    if audio_encoder:
        args += [
            "d.", "!", "audio/x-raw", "!",
            "queue", "!", "audioconvert", "!", "audioresample", "!", "audio/x-raw,channels=2", "!",
            audio_encoder, f"bitrate={AUDIO_BITRATE}", "!", "aacparse", "!", "queue", "!", "mux.",
        ]
    args += ["mp4mux", f"fragment-duration={FRAGMENT_MS}", "streamable=true", "name=mux", "!", "fdsink", "fd=1"]
    return args


def source_args(dest: Path, seconds: int, fps: int = 30) -> list[str]:
    """A 1920x1080 H.264 High (8-bit 4:2:0, ~8 Mb/s) + AAC stereo MP4 with the moov at the front.
    The format is pinned: unpinned, videotestsrc and x264enc settle on 10-bit 4:4:4 (High 4:4:4
    Predictive), which no camera or film uses and which costs several times as much to decode."""
    audio_buffers = -(-seconds * 48000 // 1024)
    return [
        "videotestsrc", f"num-buffers={seconds * fps}", "pattern=smpte", "!",
        f"video/x-raw,format=I420,width=1920,height=1080,framerate={fps}/1", "!",
        "x264enc", "speed-preset=superfast", "bitrate=8000", f"key-int-max={2 * fps}", "!",
        "h264parse", "!", "queue", "!", "mux.",
        "audiotestsrc", f"num-buffers={audio_buffers}", "wave=sine", "!", "audio/x-raw,rate=48000,channels=2", "!",
        "avenc_aac", f"bitrate={AUDIO_BITRATE}", "!", "aacparse", "!", "queue", "!", "mux.",
        "mp4mux", "faststart=true", "name=mux", "!", "filesink", f"location={dest}",
    ]


# HLS runs (media/src/pipeline.rs with Output::Hls, media/src/cmaf.rs, media/src/hls/mod.rs).
SEGMENT_S = 3.2
H264_LEVEL = "4.2"
AUDIO_RATE = 48000


def hls_launch_args(src: Path, dest: Path, width: int, height: int, fps: int, quality: int,
                    audio_encoder: str | None) -> list[str]:
    """The pipeline of an HLS run as gst-launch-1.0 arguments, writing to `dest`: the live
    pipeline with what cmaf.rs pins (profile and level caps, x264 without scene-cut keyframes,
    48 kHz audio with perfect timestamps) and segment-long fragments. The forced keyframe on
    each segment start is an event the gateway sends, which gst-launch syntax cannot say; a
    reference run starting on a segment starts with a keyframe anyway."""
    out_w, out_h = output_size(width, height, quality)
    kbps, preset = settings_for_height(out_h)
    profile = "constrained-baseline" if preset == "ultrafast" else "high"
    key_int = min(max(int(fps * 2 * SEGMENT_S + 0.5), 1), 600)
    args = [
        "filesrc", f"location={src}", "!", "decodebin", "name=d",
        "d.", "!", "video/x-raw", "!",
        "queue", "!", "videoconvert", "!", "videoscale", "!",
        f"video/x-raw,format=I420,width={out_w},height={out_h},pixel-aspect-ratio=1/1", "!",
        "x264enc", f"speed-preset={preset}", "tune=zerolatency", f"bitrate={kbps}", f"key-int-max={key_int}",
        "option-string=scenecut=0", "!",
        f"video/x-h264,profile={profile},level=(string){H264_LEVEL}", "!",
        "h264parse", "!", "queue", "!", "mux.",
    ]
    if audio_encoder:
        args += [
            "d.", "!", "audio/x-raw", "!",
            "queue", "!", "audioconvert", "!", "audioresample", "!", f"audio/x-raw,channels=2,rate={AUDIO_RATE}", "!",
            audio_encoder, f"bitrate={AUDIO_BITRATE}", "perfect-timestamp=true", "!", "aacparse", "!", "queue", "!",
            "mux.",
        ]
    args += ["mp4mux", f"fragment-duration={int(SEGMENT_S * 1000)}", "streamable=true", "name=mux", "!",
             "filesink", f"location={dest}"]
    return args
