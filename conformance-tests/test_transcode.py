"""Media extension: ``?transcode=h264&quality=N`` on GetObject, through presigned URLs.

Sources are generated here with GStreamer test sources (nothing is downloaded): a 10 s 1080p
H.264 + AAC MP4 and a video-only Matroska file. The live output is checked with ffprobe, played
with mpv, served again from the renditions store with byte ranges, and cancelled mid-stream
twenty times while the gateway's threads and descriptors are watched in /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import run
from nebula_helpers import expected_auto_encoder, presign, xml_error_code

pytestmark = pytest.mark.timeout(600)

BUCKET = "media-tests"


def _gst(*pipeline: str, timeout: int = 300) -> None:
    run(["gst-launch-1.0", "-q", *pipeline], timeout=timeout)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media-src")
    mp4 = d / "clip1080.mp4"
    _gst(
        *f"videotestsrc num-buffers=300 pattern=smpte ! video/x-raw,width=1920,height=1080,framerate=30/1 "
        f"! x264enc speed-preset=ultrafast key-int-max=60 ! h264parse ! queue ! mp4mux name=m faststart=true "
        f"! filesink location={mp4} "
        f"audiotestsrc num-buffers=470 wave=sine ! audio/x-raw,rate=48000,channels=2 ! audioconvert "
        f"! avenc_aac ! aacparse ! queue ! m.".split()
    )
    mkv = d / "silent.mkv"
    _gst(
        *f"videotestsrc num-buffers=90 pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 "
        f"! x264enc speed-preset=ultrafast ! h264parse ! matroskamux ! filesink location={mkv}".split()
    )
    txt = d / "notes.txt"
    txt.write_text("not a video\n" * 100)
    return {"mp4": mp4, "mkv": mkv, "txt": txt}


@pytest.fixture(scope="module")
def media_gw(tmp_path_factory, sources):
    from conftest import Gateway

    g = Gateway(tmp_path_factory.mktemp("gw-media"), extra_args=["--max-transcodes", "2", "--encoder", "auto"])
    g.start()
    raw = g.raw()
    assert raw.put_bucket(BUCKET).status == 200
    for name, path in (("clip1080.mp4", sources["mp4"]), ("silent.mkv", sources["mkv"]), ("notes.txt", sources["txt"])):
        r = raw.put(BUCKET, name, path.read_bytes())
        assert r.status == 200, r
    yield g
    g.assert_clean_exit()


def _url(g, key: str, **params) -> str:
    query = [(k, str(v)) for k, v in params.items()]
    return g.endpoint + presign(g.creds, "GET", g.hostport, f"/{BUCKET}/{key}", expires=600, extra_query=query)


def _ffprobe(path_or_url: str) -> dict:
    p = run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", path_or_url], timeout=120)
    return json.loads(p.stdout_text)


def _fetch(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def _proc_counts(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(l.split()[1]) for l in f if l.startswith("Threads:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return threads, fds


def test_presigned_480p_is_h264_aac_at_480(media_gw, tmp_path):
    out = tmp_path / "480.mp4"
    url = _url(media_gw, "clip1080.mp4", transcode="h264", quality=480)
    p = run(["curl", "-sS", "-f", "-D", str(tmp_path / "h.txt"), "-o", str(out), url], timeout=300)
    assert p.returncode == 0
    head = (tmp_path / "h.txt").read_text().lower()
    assert "content-type: video/mp4" in head
    assert f"x-nebula-encoder: {expected_auto_encoder()}" in head, head
    assert "x-nebula-resolution: 854x480" in head, head
    info = _ffprobe(str(out))
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert video and video[0]["codec_name"] == "h264"
    assert video[0]["height"] == 480 and video[0]["width"] % 2 == 0
    assert audio and audio[0]["codec_name"] == "aac"
    assert 9.0 <= float(info["format"]["duration"]) <= 11.0


def test_second_fetch_is_served_from_the_renditions_store_with_ranges(media_gw, tmp_path):
    url = _url(media_gw, "clip1080.mp4", quality=480)
    status, headers, full = _fetch(url)
    assert status == 200
    assert int(headers["content-length"]) == len(full), "a finished rendition has a length"
    status, headers, part = _fetch(url, {"Range": "bytes=100-1099"})
    assert status == 206
    assert headers["content-range"] == f"bytes 100-1099/{len(full)}"
    assert part == full[100:1100]
    assert headers.get("x-nebula-encoder") == expected_auto_encoder()


def test_mpv_plays_a_presigned_transcode(media_gw):
    if not shutil.which("mpv"):
        pytest.fail("mpv is not installed (scripts/setup.sh --test installs it)")
    url = _url(media_gw, "clip1080.mp4", quality=360)
    p = run(["mpv", "--no-config", "--vo=null", "--ao=null", "--frames=30", "--really-quiet", url], timeout=180)
    assert p.returncode == 0


def test_video_only_mkv_transcodes_without_audio(media_gw, tmp_path):
    out = tmp_path / "240.mp4"
    run(["curl", "-sS", "-f", "-o", str(out), _url(media_gw, "silent.mkv", quality=240)], timeout=300)
    info = _ffprobe(str(out))
    kinds = sorted(s["codec_type"] for s in info["streams"])
    assert kinds == ["video"], info["streams"]
    v = info["streams"][0]
    assert v["codec_name"] == "h264" and v["height"] == 240 and v["width"] == 426


def test_no_upscaling(media_gw, tmp_path):
    status, headers, body = _fetch(_url(media_gw, "silent.mkv", quality=1080))
    assert status == 200
    assert headers["x-nebula-resolution"] == "640x360"


def test_tampered_quality_is_rejected(media_gw):
    url = _url(media_gw, "clip1080.mp4", transcode="h264", quality=480)
    tampered = url.replace("quality=480", "quality=720")
    assert tampered != url
    with pytest.raises(urllib.error.HTTPError) as e:
        _fetch(tampered)
    assert e.value.code == 403
    assert xml_error_code(e.value.read()) == "SignatureDoesNotMatch"


def test_bad_inputs_get_s3_errors(media_gw):
    cases = [
        (_url(media_gw, "notes.txt", quality=480), 415, "UnsupportedMediaType"),
        (_url(media_gw, "clip1080.mp4", quality=999), 400, "InvalidArgument"),
        (_url(media_gw, "clip1080.mp4", transcode="vp9", quality=480), 400, "InvalidArgument"),
        (_url(media_gw, "missing.mp4", quality=480), 404, "NoSuchKey"),
    ]
    for url, status, code in cases:
        with pytest.raises(urllib.error.HTTPError) as e:
            _fetch(url)
        assert e.value.code == status, url
        assert xml_error_code(e.value.read()) == code, url


def test_quality_original_serves_stored_bytes(media_gw, sources):
    status, headers, body = _fetch(_url(media_gw, "clip1080.mp4", quality="original"))
    assert status == 200 and body == sources["mp4"].read_bytes()


def _start_and_abandon(url: str, read_bytes: int = 32 * 1024) -> None:
    """Open a live transcode, read its first bytes, then drop the connection."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=60)
    s.sendall(f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
    got = 0
    while got < read_bytes:
        chunk = s.recv(65536)
        assert chunk, "the gateway closed the stream before sending data"
        got += len(chunk)
    s.close()


def test_cancelled_streams_leave_no_threads_or_fds(media_gw):
    # Each request uses a quality that never finishes, so each one starts its own pipeline.
    url = _url(media_gw, "clip1080.mp4", quality=720)
    _start_and_abandon(url)  # warm-up: GStreamer keeps a few process-wide threads after first use
    time.sleep(2)
    threads0, fds0 = _proc_counts(media_gw.pid)
    for _ in range(20):
        _start_and_abandon(url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        threads, fds = _proc_counts(media_gw.pid)
        if threads <= threads0 + 2 and fds <= fds0 + 2:
            break
        time.sleep(0.25)
    threads, fds = _proc_counts(media_gw.pid)
    assert threads <= threads0 + 2, f"threads grew from {threads0} to {threads}"
    assert fds <= fds0 + 2, f"fds grew from {fds0} to {fds}"
    renditions = media_gw.data_dir / ".nebula" / "renditions"
    assert not [p for p in renditions.iterdir() if p.name.endswith(".part")], "partial renditions left behind"


def test_transcode_slots_are_limited(media_gw):
    from urllib.parse import urlsplit

    # Hold both slots (max 2) with two live transcodes, read slowly; a third gets 503 SlowDown.
    socks = []
    for q in (720, 1080):
        u = urlsplit(_url(media_gw, "clip1080.mp4", quality=q))
        s = socket.create_connection((u.hostname, u.port), timeout=60)
        s.sendall(f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        socks.append(s)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            _fetch(_url(media_gw, "clip1080.mp4", quality=240))
        assert e.value.code == 503
        assert e.value.headers.get("Retry-After")
        assert xml_error_code(e.value.read()) == "SlowDown"
    finally:
        for s in socks:
            s.close()
