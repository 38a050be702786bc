"""Media players on a presigned link: ffprobe reads the container, mpv plays and seeks with ranged reads.

The 30 s H.264/AAC MP4 (640x360, moov at the front) is generated here with gst-launch-1.0; nothing
is downloaded.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import new_bucket_name, run
from nebula_helpers import sha256_file

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gst-launch-1.0", "mpv", "ffprobe")),
    reason="gst-launch-1.0, mpv and ffprobe are required",
)

KEY = "videos/test clip.mp4"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("media") / "clip.mp4"
    pipeline = (
        "videotestsrc num-buffers=900 pattern=smpte "
        "! video/x-raw,width=640,height=360,framerate=30/1 "
        "! x264enc speed-preset=ultrafast bitrate=2000 key-int-max=60 "
        "! video/x-h264,profile=baseline ! h264parse ! queue ! mux. "
        "audiotestsrc num-buffers=900 samplesperbuffer=1600 "
        "! audio/x-raw,rate=48000,channels=2 ! audioconvert ! voaacenc bitrate=128000 "
        "! aacparse ! queue ! mux. "
        f"mp4mux name=mux faststart=true ! filesink location={out}"
    )
    run(["gst-launch-1.0", "-q", "-e", *pipeline.split()], timeout=180)
    assert out.stat().st_size > 2_000_000, "generated clip is unexpectedly small"
    return out


@pytest.fixture(scope="module")
def media_url(gw, clip):
    s3 = gw.boto3_client(signature_version="s3v4")
    bucket = new_bucket_name("media")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(clip), bucket, KEY, ExtraArgs={"ContentType": "video/mp4"})
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": KEY}, ExpiresIn=3600)
    return bucket, url


def player_env(gw, tmp_path):
    return gw.client_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_CACHE_HOME=str(tmp_path / "cache"))


def request_lines(gw, mark, bucket):
    path = f"path=/{bucket}/videos/test%20clip.mp4"
    alt = f"path=/{bucket}/videos/test clip.mp4"
    return [l for l in gw.log_since(mark).splitlines() if "method=GET" in l and (path in l or alt in l)]


def test_players_presigned_clip_matches(gw, media_url, clip, tmp_path):
    _, url = media_url
    out = tmp_path / "dl.mp4"
    run(["curl", "-sS", "-f", "-o", out, url], env=gw.client_env())
    assert sha256_file(out) == sha256_file(clip)


def test_players_ffprobe_reads_duration_and_streams(gw, media_url, tmp_path):
    _, url = media_url
    p = run(
        ["ffprobe", "-v", "error", "-show_entries",
         "format=duration,format_name:stream=codec_type,codec_name,width,height", "-of", "json", url],
        env=player_env(gw, tmp_path), timeout=120,
    )
    info = json.loads(p.stdout_text)
    assert abs(float(info["format"]["duration"]) - 30.0) < 0.5, info
    assert "mp4" in info["format"]["format_name"]
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
    assert streams["audio"]["codec_name"] == "aac"


def test_players_mpv_plays(gw, media_url, tmp_path):
    _, url = media_url
    p = run(
        ["mpv", "--no-config", "--vo=null", "--ao=null", "--frames=30", "--term-playing-msg=NEBULA_START=${=time-pos}", url],
        env=player_env(gw, tmp_path), timeout=120, check=False,
    )
    out = p.stdout_text + p.stderr_text
    assert p.returncode == 0, out[-3000:]
    assert "NEBULA_START=" in out and "h264" in out and "aac" in out, out[-3000:]


def test_players_mpv_seeks_with_ranged_reads(gw, media_url, clip, tmp_path):
    bucket, url = media_url
    mark = gw.log_mark()
    p = run(
        ["mpv", "--no-config", "--vo=null", "--ao=null", "--start=20", "--frames=10",
         "--term-playing-msg=NEBULA_START=${=time-pos}", url],
        env=player_env(gw, tmp_path), timeout=120, check=False,
    )
    out = p.stdout_text + p.stderr_text
    assert p.returncode == 0, out[-3000:]
    m = re.search(r"NEBULA_START=([0-9.]+)", out)
    assert m and abs(float(m.group(1)) - 20.0) < 2.5, f"mpv did not start near 20 s: {out[-2000:]}"
    lines = request_lines(gw, mark, bucket)
    assert lines, "no request log lines for the clip (expected method=GET path=/bucket/key ...)\n" + gw.log_tail(20)
    ranged = [l for l in lines if "range=bytes=" in l and "status=206" in l]
    assert ranged, "mpv's reads were not served as ranged 206 responses:\n" + "\n".join(lines)
    starts = [int(x) for l in ranged for x in re.findall(r"range=bytes=(\d+)-", l)]
    assert any(s > 0 for s in starts), "no ranged read past the start of the file (seek did not use Range):\n" + "\n".join(lines)
    assert len(ranged) == len(lines), "mpv fetched the clip without a Range:\n" + "\n".join(lines)
    # The 20 s point is two thirds into the file: mpv jumped there instead of reading up to it.
    size = clip.stat().st_size
    assert any(s >= size // 2 for s in starts), f"no read starting past the middle of {size} bytes:\n" + "\n".join(lines)
