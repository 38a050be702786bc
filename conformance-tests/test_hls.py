"""HLS on demand (``?stream=hls``) through presigned URLs, with real players.

Sources are generated here with GStreamer test sources (nothing is downloaded): a 20 s 640x360
H.264 + AAC MP4 (seven 3.2 s segments, ladder 240 and 360) and a 10 s video-only one. The issue
asks for a 2-minute 1080p source; 20 s at 360p exercises the same paths (several segments,
cold starts in the middle, a short last segment, two variants) at a fraction of the encode time
on CI's 2 cores. Each test that needs a cold cache uploads its own copy of the source (a new key
has no segments yet).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import run
from nebula_helpers import object_path, playlist_uris, presign, xml_error_code

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("gst-launch-1.0", "ffmpeg", "ffprobe", "mpv")),
        reason="gst-launch-1.0, ffmpeg, ffprobe and mpv are required",
    ),
]

BUCKET = "hls-tests"
SEGMENT = 3.2
DURATION = 20.0
FRAME = 1 / 30


def _gst(pipeline: str) -> None:
    run(["gst-launch-1.0", "-q", "-e", *pipeline.split()], timeout=300)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hls-src")
    av = d / "av.mp4"
    _gst(
        "videotestsrc num-buffers=600 pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 "
        "! x264enc speed-preset=ultrafast key-int-max=60 ! h264parse ! queue ! mp4mux name=m faststart=true "
        f"! filesink location={av} "
        "audiotestsrc num-buffers=938 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 "
        "! audioconvert ! avenc_aac ! aacparse ! queue ! m."
    )
    silent = d / "silent.mp4"
    _gst(
        "videotestsrc num-buffers=300 pattern=smpte ! video/x-raw,width=640,height=360,framerate=30/1 "
        "! x264enc speed-preset=ultrafast key-int-max=60 ! h264parse ! mp4mux faststart=true "
        f"! filesink location={silent}"
    )
    return {"av": av, "silent": silent}


@pytest.fixture(scope="module")
def hls_gw(tmp_path_factory):
    from conftest import Gateway

    g = Gateway(
        tmp_path_factory.mktemp("gw-hls"),
        # Tests share this gateway, and a pipeline keeps its slot while it runs ahead of
        # its viewer: ffprobe on the master alone starts one per quality. Four slots keep
        # one test's pipelines from refusing the next test's segment (503 SlowDown, which
        # ffprobe does not retry); the limit itself is tested on a gateway of its own.
        extra_args=["--max-transcodes", "4", "--public-bucket", "hls-public"],
    )
    g.start()
    raw = g.raw()
    assert raw.put_bucket(BUCKET).status == 200
    yield g
    g.assert_clean_exit()


def _upload(g, src: Path, key: str, bucket: str = BUCKET) -> str:
    r = g.raw().put(bucket, key, src.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert r.status == 200, r
    return key


def _master(g, key: str, expires: int = 600, bucket: str = BUCKET, **extra) -> str:
    query = [("stream", "hls")] + [(k, str(v)) for k, v in extra.items()]
    return g.endpoint + presign(
        g.creds, "GET", g.hostport, object_path(bucket, key), expires=expires, extra_query=query
    )


def _fetch(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def _error(url: str) -> tuple[int, dict, str | None]:
    with pytest.raises(urllib.error.HTTPError) as e:
        _fetch(url)
    return e.value.code, {k.lower(): v for k, v in e.value.headers.items()}, xml_error_code(e.value.read())


def _uris(g, playlist: str) -> list[str]:
    """The URLs of a playlist (its non-tag lines and EXT-X-MAP), made absolute."""
    return [g.endpoint + u if u.startswith("/") else u for u in playlist_uris(playlist)]


def _params(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(url).query))


def _ffprobe(target: str, entries: str) -> dict:
    p = run(["ffprobe", "-v", "error", "-print_format", "json", "-show_entries", entries, target], timeout=180)
    return json.loads(p.stdout_text)


def _media_playlist(g, key: str, quality: int) -> tuple[str, list[str]]:
    status, headers, body = _fetch(_master(g, key, quality=quality))
    assert status == 200 and headers["content-type"] == "application/vnd.apple.mpegurl"
    text = body.decode()
    return text, _uris(g, text)


def _segment_files(g, key: str, bucket: str = BUCKET) -> list[Path]:
    """Segment files of an object in the renditions store (folders `<md5(bucket NUL key)>-*.hls`)."""
    import hashlib

    prefix = hashlib.md5(f"{bucket}\0{key}".encode()).hexdigest()
    return sorted((g.data_dir / ".nebula" / "renditions").glob(f"{prefix}-*.hls/*"))


def _pipelines(g) -> int:
    r = g.raw().request("GET", "/_nebula/v1/metrics")
    assert r.status == 200, r
    m = re.search(rb"^nebula_media_pipelines (\d+)", r.body, re.M)
    assert m, r.body[:2000]
    return int(m.group(1))


def test_master_playlist_lists_the_ladder_and_ffprobe_reads_it(hls_gw, sources):
    key = _upload(hls_gw, sources["av"], "master.mp4")
    status, headers, body = _fetch(_master(hls_gw, key))
    assert status == 200
    assert headers["content-type"] == "application/vnd.apple.mpegurl"
    text = body.decode()
    assert text.startswith("#EXTM3U\n") and "#EXT-X-VERSION:7" in text
    infs = re.findall(r"#EXT-X-STREAM-INF:(.*)", text)
    # Never above the source: 240 and 360 for a 360p source. No `original` entry: x264enc
    # made this source High 4:4:4 (videotestsrc's format left open), which browsers do
    # not decode, so it is not stream-copied (test_stream_copy_* covers one that is).
    assert len(infs) == 2, text
    for inf, res in zip(infs, ("426x240", "640x360")):
        assert f"RESOLUTION={res}" in inf, inf
        assert re.search(r'CODECS="avc1\.[0-9A-F]{6},mp4a\.40\.2"', inf), inf
        assert "BANDWIDTH=" in inf and "AVERAGE-BANDWIDTH=" in inf and "FRAME-RATE=30.000" in inf
    urls = _uris(hls_gw, text)
    assert [_params(u)["quality"] for u in urls] == ["240", "360"]
    assert all("X-Amz-Signature" in u for u in urls)
    info = _ffprobe(_master(hls_gw, key), "stream=codec_name,width,height:format=duration")
    codecs = sorted({s["codec_name"] for s in info["streams"]})
    assert codecs == ["aac", "h264"], info
    assert {(s.get("width"), s.get("height")) for s in info["streams"] if s["codec_name"] == "h264"} == {
        (426, 240),
        (640, 360),
    }
    assert abs(float(info["format"]["duration"]) - DURATION) <= SEGMENT, info


def test_media_playlist_is_vod_with_every_segment(hls_gw, sources):
    key = _upload(hls_gw, sources["av"], "media.mp4")
    text, urls = _media_playlist(hls_gw, key, 360)
    for tag in ("#EXT-X-VERSION:7", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-ENDLIST", "#EXT-X-TARGETDURATION:4"):
        assert tag in text, text
    durations = [float(d) for d in re.findall(r"#EXTINF:([0-9.]+),", text)]
    assert len(durations) == 7 and durations[:6] == [SEGMENT] * 6, durations
    assert abs(sum(durations) - DURATION) < 0.1, durations
    segs = [_params(u)["segment"] for u in urls]
    assert segs == ["init"] + [str(n) for n in range(7)], segs
    info = _ffprobe(_master(hls_gw, key, quality=360), "stream=codec_name,width,height:format=duration")
    assert abs(float(info["format"]["duration"]) - DURATION) <= SEGMENT, info
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}


def test_ffmpeg_copies_the_whole_stream_in_sync(hls_gw, sources, tmp_path):
    key = _upload(hls_gw, sources["av"], "copy.mp4")
    out = tmp_path / "out.mp4"
    run(["ffmpeg", "-v", "error", "-y", "-i", _master(hls_gw, key), "-map", "0", "-c", "copy", str(out)], timeout=300)
    info = _ffprobe(str(out), "stream=codec_type,start_time,duration:format=duration")
    assert abs(float(info["format"]["duration"]) - DURATION) <= SEGMENT, info
    video = [float(s["start_time"]) for s in info["streams"] if s["codec_type"] == "video"]
    audio = [float(s["start_time"]) for s in info["streams"] if s["codec_type"] == "audio"]
    assert video and audio, info
    for v, a in zip(video, audio):
        assert abs(v - a) <= FRAME, info


def test_cold_segment_decodes_and_starts_on_the_source_timeline(hls_gw, sources, tmp_path):
    key = _upload(hls_gw, sources["av"], "cold.mp4")
    _, urls = _media_playlist(hls_gw, key, 240)
    assert not _segment_files(hls_gw, key), "cache is not cold"
    n = 4
    status, h, seg = _fetch(urls[1 + n])
    assert status == 200 and h["content-type"] == "video/iso.segment" and h.get("etag")
    first = (h["etag"], h["last-modified"])
    status, h, init = _fetch(urls[0])
    assert status == 200 and h["content-type"] == "video/mp4"
    path = tmp_path / "seg.mp4"
    path.write_bytes(init + seg)
    p = run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], timeout=120)
    assert p.stderr_text.strip() == "", p.stderr_text
    info = _ffprobe(str(path), "stream=codec_type,start_time")
    starts = {s["codec_type"]: float(s["start_time"]) for s in info["streams"]}
    assert abs(starts["video"] - n * SEGMENT) <= FRAME, starts
    assert abs(starts["audio"] - n * SEGMENT) <= FRAME, starts
    # Served again from its file, with byte ranges.
    status, h, part = _fetch(urls[1 + n], {"Range": "bytes=0-99"})
    assert status == 206 and part == seg[:100]
    assert h["content-range"] == f"bytes 0-99/{len(seg)}"
    # Serving a segment counts as a use for eviction, which must not change what names its bytes.
    time.sleep(1.1)
    status, h, again = _fetch(urls[1 + n])
    assert status == 200 and again == seg and (h["etag"], h["last-modified"]) == first, (h, first)


def test_mpv_plays_the_presigned_master_url(hls_gw, sources, tmp_path):
    key = _upload(hls_gw, sources["av"], "mpv.mp4")
    env = hls_gw.client_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    p = run(
        ["mpv", "--no-config", "--vo=null", "--ao=null", "--frames=60",
         "--term-playing-msg=NEBULA_START=${=time-pos}", _master(hls_gw, key)],
        env=env, timeout=180, check=False,
    )
    out = p.stdout_text + p.stderr_text
    assert p.returncode == 0, out[-3000:]
    assert "NEBULA_START=" in out and "h264" in out and "aac" in out, out[-3000:]


def _psnr(a: Path, b: Path) -> float:
    p = run(["ffmpeg", "-v", "info", "-nostats", "-i", str(a), "-i", str(b), "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"],
            timeout=60)
    m = re.search(r"PSNR .*average:([0-9.]+|inf)", p.stderr_text)
    assert m, p.stderr_text[-2000:]
    return float(m.group(1))


def test_mpv_starts_a_cold_source_at_a_moment(hls_gw, sources, tmp_path):
    """`mpv --start` cannot seek in fMP4 HLS (FFmpeg 5.1), so `at=` makes the playlists begin
    at the segment holding the moment: mpv on a cold source shows that segment's first frame
    (the moving ball of `pattern=ball` tells the moments apart), and nothing before it is made."""
    key = _upload(hls_gw, sources["av"], "mpv-at.mp4")
    at, n = 13.5, 4  # segment 4: [12.8, 16.0)
    text, urls = _media_playlist_at(hls_gw, key, at)
    assert "#EXT-X-MEDIA-SEQUENCE:4\n" in text and "#EXT-X-START:TIME-OFFSET=0.700,PRECISE=YES\n" in text, text
    assert [_params(u).get("segment") for u in urls] == ["init", "4", "5", "6"], urls
    img = tmp_path / "img"
    env = hls_gw.client_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    p = run(["mpv", "--no-config", "--vo=image", f"--vo-image-outdir={img}", "--vo-image-format=png", "--ao=null",
             "--frames=1", "--term-playing-msg=NEBULA_START=${=demuxer-start-time}", _master(hls_gw, key, at=at)],
            env=env, timeout=180, check=False)
    out = p.stdout_text + p.stderr_text
    assert p.returncode == 0, out[-3000:]
    m = re.search(r"NEBULA_START=([0-9.]+)", out)
    assert m and abs(float(m.group(1)) - n * SEGMENT) <= FRAME, out[-3000:]
    shown = img / "00000001.png"
    refs = {}
    for t in (n * SEGMENT, 3.2, 8.0, 18.0):
        refs[t] = tmp_path / f"ref-{t}.png"
        run(["ffmpeg", "-v", "error", "-ss", str(t), "-i", str(sources["av"]), "-frames:v", "1", str(refs[t])], timeout=60)
    right = _psnr(shown, refs[n * SEGMENT])
    for t in (3.2, 8.0, 18.0):
        assert right > _psnr(shown, refs[t]) + 3, (t, right)
    made = {f.name for f in _segment_files(hls_gw, key)}
    assert not made & {f"{i}.m4s" for i in range(n)}, made
    # The moment is part of the signature, and must be inside the video.
    assert _error(_master(hls_gw, key, at=at).replace("at=13.5", "at=1.5"))[0] == 403
    assert _error(_master(hls_gw, key, at=DURATION + 1))[:3:2] == (400, "InvalidArgument")


def _media_playlist_at(g, key: str, at: float) -> tuple[str, list[str]]:
    """The media playlist the master playlist with `at` points at (its first entry)."""
    status, _, body = _fetch(_master(g, key, at=at))
    assert status == 200
    master = body.decode()
    first = _uris(g, master)[0]
    assert _params(first).get("at") == f"{at:.3f}", first
    status, _, body = _fetch(first)
    assert status == 200
    text = body.decode()
    return text, _uris(g, text)


def _vlc_remux(g, url: str, *options: str) -> dict:
    """Plays `url` with VLC (`cvlc`) to the end and returns ffprobe's view of what it played,
    written out remuxed (not re-encoded) to MPEG-TS (VLC's TS muxer starts its timestamps
    near 0 whatever the start). VLC refuses to run as root, so as root it runs as `nobody`,
    in a folder of its own that `nobody` can write."""
    out_dir = Path(tempfile.mkdtemp(prefix="nebula-vlc-"))
    try:
        out_dir.chmod(0o777)
        out = out_dir / "played.ts"
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if os.geteuid() == 0 else []
        p = run(
            [*as_user, "cvlc", "-I", "dummy", "--play-and-exit", *options, url,
             f"--sout=#std{{access=file,mux=ts,dst={out}}}"],
            env=g.client_env(HOME=str(out_dir)), timeout=180, check=False,
        )
        log = (p.stdout_text + p.stderr_text)[-3000:]
        assert p.returncode == 0 and out.exists() and out.stat().st_size > 0, log
        return _ffprobe(str(out), "stream=codec_type,codec_name,height,start_time:format=duration")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def test_vlc_plays_the_presigned_master_url(hls_gw, sources):
    """VLC's adaptive demuxer opens the master, picks the highest variant and streams it to the
    end; what it played is checked."""
    key = _upload(hls_gw, sources["av"], "vlc.mp4")
    info = _vlc_remux(hls_gw, _master(hls_gw, key), "--adaptive-logic=highest")
    codecs = {s["codec_name"]: s.get("height") for s in info["streams"]}
    assert codecs.get("h264") == 360 and "aac" in codecs, info
    assert abs(float(info["format"]["duration"]) - DURATION) <= SEGMENT, info


def test_vlc_starts_at_an_offset(hls_gw, sources):
    """`cvlc --start-time=13` on a cold master URL: VLC reads segment 0, then seeks to the
    segment holding 13 s (4, from 12.8 s) and plays from there to the end, video and audio
    together. VLC 3.0 reads a fragment's `tfdt` only at a break in the `moof` sequence
    numbers, so this needs every track of a segment in one `moof` (`hls/run.rs`): with a
    `moof` per track it wrote nothing."""
    key = _upload(hls_gw, sources["av"], "vlc-start.mp4")
    info = _vlc_remux(hls_gw, _master(hls_gw, key), "--adaptive-logic=highest", "--start-time=13")
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["height"] == 360, info
    assert streams["audio"]["codec_name"] == "aac", info
    # It played from 12.8 s (segment 4) or 13 s (VLC drops what comes before) to the end.
    assert DURATION - 13 - 0.1 <= float(info["format"]["duration"]) <= DURATION - 4 * SEGMENT + 0.1, info
    starts = [float(streams[t]["start_time"]) for t in ("video", "audio")]
    assert abs(starts[0] - starts[1]) <= FRAME, info


def test_tampered_urls_are_refused(hls_gw, sources):
    key = _upload(hls_gw, sources["av"], "tamper.mp4")
    _, urls = _media_playlist(hls_gw, key, 240)
    seg3 = urls[1 + 3]
    for old, new in (("segment=3", "segment=4"), ("quality=240", "quality=360"), ("stream=hls", "stream=HLS")):
        assert old in seg3
        code, _, err = _error(seg3.replace(old, new))
        assert code == 403 and err == "SignatureDoesNotMatch", (old, new, code, err)
    code, _, err = _error(_master(hls_gw, key).replace("stream=hls", "stream=hls&quality=240"))
    assert code == 403, (code, err)


def test_expiry_follows_the_request(hls_gw, sources):
    key = _upload(hls_gw, sources["av"], "expiry.mp4")
    url = _master(hls_gw, key, expires=60)
    signed_at = time.time()
    _, _, body = _fetch(url)
    for u in _uris(hls_gw, body.decode()):
        q = _params(u)
        assert int(q["X-Amz-Expires"]) <= 60, u
    # A header-signed request has no expiry of its own: 12 hours.
    r = hls_gw.raw().get(BUCKET, key, query=[("stream", "hls")])
    assert r.status == 200, r
    for u in _uris(hls_gw, r.body.decode()):
        assert 43100 <= int(_params(u)["X-Amz-Expires"]) <= 43200, u
    short = _master(hls_gw, key, expires=1)
    time.sleep(max(0.0, signed_at + 2.5 - time.time()))
    code, _, err = _error(short)
    assert code == 403 and err == "AccessDenied", (code, err)


def test_source_without_audio(hls_gw, sources, tmp_path):
    key = _upload(hls_gw, sources["silent"], "silent.mp4")
    _, _, body = _fetch(_master(hls_gw, key))
    text = body.decode()
    assert "mp4a" not in text and re.search(r'CODECS="avc1\.[0-9A-F]{6}"', text), text
    out = tmp_path / "silent.mp4"
    run(["ffmpeg", "-v", "error", "-y", "-i", _master(hls_gw, key, quality=240), "-c", "copy", str(out)], timeout=300)
    info = _ffprobe(str(out), "stream=codec_type:format=duration")
    assert [s["codec_type"] for s in info["streams"]] == ["video"], info
    assert abs(float(info["format"]["duration"]) - 10.0) <= SEGMENT, info


def test_seeking_ahead_and_back_leaves_nothing_behind(hls_gw, sources):
    key = _upload(hls_gw, sources["av"], "seek.mp4")
    _, urls = _media_playlist(hls_gw, key, 240)
    # Far ahead (a cold start at 5), back (a restart at 0), then on to the end.
    for n in (5, 0, 1, 6):
        status, _, body = _fetch(urls[1 + n])
        assert status == 200 and body[4:8] == b"moof"
    deadline = time.time() + 60
    while _pipelines(hls_gw) and time.time() < deadline:
        time.sleep(0.5)
    assert _pipelines(hls_gw) == 0, "pipelines still running after the source's end"
    renditions = hls_gw.data_dir / ".nebula" / "renditions"
    stray = [p for p in renditions.rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert not stray, stray


def test_replacing_the_object_drops_its_segments(hls_gw, sources):
    key = _upload(hls_gw, sources["av"], "replaced.mp4")
    _, urls = _media_playlist(hls_gw, key, 240)
    assert _fetch(urls[1])[0] == 200
    assert _segment_files(hls_gw, key)
    _upload(hls_gw, sources["silent"], key)
    deadline = time.time() + 10
    while _segment_files(hls_gw, key) and time.time() < deadline:
        time.sleep(0.2)
    assert not _segment_files(hls_gw, key), "segments of the replaced object remain"
    _, _, body = _fetch(_master(hls_gw, key))
    assert "mp4a" not in body.decode()


def test_public_bucket_gets_plain_urls_and_private_stays_closed(hls_gw, sources):
    raw = hls_gw.raw()
    assert raw.put_bucket("hls-public").status == 200
    _upload(hls_gw, sources["av"], "open.mp4", bucket="hls-public")
    status, _, body = _fetch(hls_gw.endpoint + object_path("hls-public", "open.mp4") + "?stream=hls")
    assert status == 200
    urls = _uris(hls_gw, body.decode())
    assert urls and not any("X-Amz-" in u for u in urls), urls
    _, _, media = _fetch(urls[0])
    assert _fetch(_uris(hls_gw, media.decode())[0])[0] == 200
    _upload(hls_gw, sources["av"], "closed.mp4")
    code, _, err = _error(hls_gw.endpoint + object_path(BUCKET, "closed.mp4") + "?stream=hls")
    assert code == 403 and err == "AccessDenied", (code, err)


def test_bad_parameters_get_s3_errors(hls_gw, sources):
    key = _upload(hls_gw, sources["av"], "bad.mp4")
    for extra in ({"quality": "999"}, {"segment": "1"}, {"quality": "240", "segment": "x"}):
        code, _, err = _error(_master(hls_gw, key, **extra))
        assert code == 400 and err == "InvalidArgument", (extra, code, err)
    code, _, err = _error(_master(hls_gw, key, quality=240, segment=7))
    assert code == 400 and err == "InvalidArgument", (code, err)


def test_busy_segment_gets_slow_down_with_retry_after(start_gateway, sources):
    import socket
    from urllib.parse import urlsplit

    g = start_gateway(extra_args=["--max-transcodes", "1"])
    assert g.raw().put_bucket(BUCKET).status == 200
    _upload(g, sources["av"], "one.mp4")
    _upload(g, sources["av"], "two.mp4")
    _, first = _media_playlist(g, "one.mp4", 240)
    _, second = _media_playlist(g, "two.mp4", 240)
    # A run parked ahead of a viewer who went away (five segments ahead of the newest
    # request) gives its slot to a waiting viewer.
    assert _fetch(first[1])[0] == 200
    deadline = time.time() + 60
    while not any(p.name == "5.m4s" for p in _segment_files(g, "one.mp4")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    assert _fetch(second[1])[0] == 200
    while not any(p.name == "5.m4s" for p in _segment_files(g, "two.mp4")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    # A live transcode (`?quality=`, which also takes a parked run's slot), read slowly, holds
    # the only slot: a segment that needs a pipeline is refused with 503 SlowDown and
    # Retry-After, which players retry.
    live = urlsplit(g.endpoint + presign(g.creds, "GET", g.hostport, object_path(BUCKET, "one.mp4"),
                                         expires=600, extra_query=[("quality", "360")]))
    s = socket.create_connection((live.hostname, live.port), timeout=60)
    try:
        s.sendall(f"GET {live.path}?{live.query} HTTP/1.1\r\nHost: {live.netloc}\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        code, headers, err = _error(first[1 + 6])
        assert code == 503 and err == "SlowDown", (code, err)
        assert headers.get("retry-after"), headers
    finally:
        s.close()


def test_a_finished_job_serves_every_segment_without_a_pipeline(hls_gw, sources, tmp_path):
    """A background job's rendition is the quality's HLS segments end to end (same pipeline
    and CMAF rules as on-demand runs): once it finished, its segments are ranges of that
    file. No pipeline starts and no segment file is made, even for a seek."""
    key = _upload(hls_gw, sources["av"], "job.mp4")
    raw = hls_gw.raw()
    r = raw.request("POST", "/_nebula/v1/transcode", headers={"content-type": "application/json"},
                    body=json.dumps({"bucket": BUCKET, "key": key, "qualities": [240]}).encode())
    assert r.status == 201, r
    [job] = json.loads(r.body)["jobs"]
    deadline = time.time() + 240
    while True:
        job = json.loads(raw.request("GET", f"/_nebula/v1/jobs/{job['id']}").body)
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        assert time.time() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "completed", job
    while _pipelines(hls_gw) and time.time() < deadline:
        time.sleep(0.2)

    _, urls = _media_playlist(hls_gw, key, 240)
    segments = {}
    for n in (4, 0, 6, 2):  # a seek ahead, back, to the end
        status, h, body = _fetch(urls[1 + n])
        assert status == 200 and h["content-type"] == "video/iso.segment" and body[4:8] == b"moof"
        segments[n] = body
        assert _pipelines(hls_gw) == 0, f"a pipeline started for segment {n}"
    status, h, init = _fetch(urls[0])
    assert status == 200 and h["content-type"] == "video/mp4" and init[4:8] == b"ftyp"
    assert not _segment_files(hls_gw, key), "segments were made on demand instead of served from the job"
    for n, seg in segments.items():
        path = tmp_path / f"seg{n}.mp4"
        path.write_bytes(init + seg)
        p = run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], timeout=120)
        assert p.stderr_text.strip() == "", (n, p.stderr_text)
        info = _ffprobe(str(path), "stream=codec_type,start_time,width,height")
        starts = {s["codec_type"]: float(s["start_time"]) for s in info["streams"]}
        assert abs(starts["video"] - n * SEGMENT) <= FRAME, (n, starts)
        assert abs(starts["audio"] - n * SEGMENT) <= FRAME, (n, starts)
        assert [(s["width"], s["height"]) for s in info["streams"] if s["codec_type"] == "video"] == [(426, 240)]
    # A byte range of a segment is a range of that segment.
    status, h, part = _fetch(urls[1 + 4], {"Range": "bytes=10-109"})
    assert status == 206 and part == segments[4][10:110]
    assert h["content-range"] == f"bytes 10-109/{len(segments[4])}"
    # The whole stream, as a player reads it: the source's duration, audio and video in sync.
    out = tmp_path / "job.mp4"
    run(["ffmpeg", "-v", "error", "-y", "-i", _master(hls_gw, key, quality=240), "-map", "0", "-c", "copy", str(out)],
        timeout=300)
    info = _ffprobe(str(out), "stream=codec_type,start_time:format=duration")
    assert abs(float(info["format"]["duration"]) - DURATION) <= SEGMENT, info
    starts = {s["codec_type"]: float(s["start_time"]) for s in info["streams"]}
    assert abs(starts["video"] - starts["audio"]) <= FRAME, info
    assert _pipelines(hls_gw) == 0 and not _segment_files(hls_gw, key)


# Stream copy (`quality=original`): the source's own H.264/AAC cut at its keyframes.
COPY_DURATION = 12.0
# Keyframes at 0, 1.2, 2, 5, 9 and 9.6 s: segments of about 3.2 s end at the keyframe
# nearest their start plus 3.2 s, so they start at 0, 2, 5 and 9 s.
COPY_STARTS = [0.0, 2.0, 5.0, 9.0]


@pytest.fixture(scope="module")
def copy_sources(tmp_path_factory) -> dict[str, Path]:
    """A 12 s 640x360 H.264 High (B-frames, uneven GOPs: no regular keyframe interval, no
    scene cuts) + AAC MP4, made with FFmpeg's test sources (GStreamer's x264enc cannot
    place keyframes at chosen times); and a VP8 WebM, which cannot be copied."""
    d = tmp_path_factory.mktemp("hls-copy-src")
    uneven = d / "uneven.mp4"
    run(["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={COPY_DURATION:g}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={COPY_DURATION:g}",
         "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "1000", "-sc_threshold", "0",
         "-force_key_frames", "0,1.2,2,5,9,9.6", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
         str(uneven)], timeout=300)
    vp8 = d / "vp8.webm"
    _gst(
        "videotestsrc num-buffers=90 ! video/x-raw,width=320,height=180,framerate=30/1 "
        f"! vp8enc deadline=1 ! webmmux ! filesink location={vp8}"
    )
    return {"uneven": uneven, "vp8": vp8}


def _encoders_started(g) -> int:
    r = g.raw().request("GET", "/_nebula/v1/metrics")
    assert r.status == 200, r
    m = re.search(rb"^nebula_media_encoders_started_total (\d+)", r.body, re.M)
    assert m, r.body[:2000]
    return int(m.group(1))


def _packet_hashes(path: Path, stream: str) -> list[str]:
    """MD5 of each packet's bytes of one stream, in decode order (`-c copy -f framemd5`)."""
    p = run(["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy", "-f", "framemd5", "-"],
            timeout=120)
    return [line.rsplit(",", 1)[1].strip() for line in p.stdout_text.splitlines() if not line.startswith("#")]


def _packets(path: Path, stream: str) -> list[dict]:
    """pts, dts and flags of every packet of one stream, in decode order."""
    p = run(["ffprobe", "-v", "error", "-print_format", "json", "-select_streams", stream,
             "-show_entries", "packet=pts_time,dts_time,flags", str(path)], timeout=120)
    return json.loads(p.stdout_text)["packets"]


def _same_samples(ours: list[str], theirs: list[str], edge: int) -> None:
    """`ours` are `theirs` in order, byte for byte, but for at most `edge` at each end."""
    start = theirs.index(ours[0])
    assert start <= edge and len(ours) + 2 * edge >= len(theirs), (start, len(ours), len(theirs))
    assert ours == theirs[start:start + len(ours)], "packet bytes differ from the source's"


def test_stream_copy_cuts_the_source_at_its_keyframes_without_encoding(hls_gw, copy_sources, tmp_path):
    src = copy_sources["uneven"]
    key = _upload(hls_gw, src, "copied.mp4")
    _, _, body = _fetch(_master(hls_gw, key))
    text = body.decode()
    infs = re.findall(r"#EXT-X-STREAM-INF:(.*)", text)
    urls = _uris(hls_gw, text)
    assert [_params(u)["quality"] for u in urls] == ["240", "360", "original"], text
    # CODECS from the source's SPS: High (64), no constraint flags, its level.
    level = _ffprobe(str(src), "stream=level")["streams"][0]["level"]
    original = infs[2]
    assert "RESOLUTION=640x360" in original and "FRAME-RATE=30.000" in original, original
    assert f'CODECS="avc1.6400{level:02X},mp4a.40.2"' in original, original
    peak = int(re.search(r"(?<!-)BANDWIDTH=(\d+)", original).group(1))
    average = int(re.search(r"AVERAGE-BANDWIDTH=(\d+)", original).group(1))
    file_rate = src.stat().st_size * 8 / COPY_DURATION
    assert peak >= average and 0.8 * file_rate <= average <= 1.2 * file_rate, (peak, average, file_rate)

    # The media playlist: segments from keyframe to keyframe, the target the longest rounded up.
    status, _, body = _fetch(_master(hls_gw, key, quality="original"))
    media = body.decode()
    durations = [float(d) for d in re.findall(r"#EXTINF:([0-9.]+),", media)]
    ends = COPY_STARTS[1:] + [COPY_DURATION]
    assert durations == pytest.approx([b - a for a, b in zip(COPY_STARTS, ends)], abs=0.002), media
    assert "#EXT-X-TARGETDURATION:4\n" in media and "#EXT-X-ENDLIST" in media, media
    seg_urls = _uris(hls_gw, media)
    assert [_params(u)["segment"] for u in seg_urls] == ["init", "0", "1", "2", "3"]

    # Cold, a seek first (segment 2), then the rest: no encoder starts.
    encoders = _encoders_started(hls_gw)
    segs = {}
    for n in (2, 0, 3, 1):
        status, h, segs[n] = _fetch(seg_urls[1 + n])
        assert status == 200 and h["content-type"] == "video/iso.segment" and segs[n][4:8] == b"moof"
    status, h, init = _fetch(seg_urls[0])
    assert status == 200 and h["content-type"] == "video/mp4" and init[4:8] == b"ftyp"
    assert _encoders_started(hls_gw) == encoders, "a stream copy started an encoder"

    # Each segment starts with a keyframe, its decode time its place on the source timeline.
    for n, seg in segs.items():
        one = tmp_path / f"one{n}.mp4"
        one.write_bytes(init + seg)
        video = _packets(one, "v:0")
        assert "K" in video[0]["flags"], (n, video[0])
        assert abs(float(video[0]["dts_time"]) - COPY_STARTS[n]) < 0.002, (n, video[0])
    # Joined, they are the source: every video sample byte for byte, every audio sample the
    # source presents (its edit list leaves out AAC's priming and padding frames), and no gap
    # or overlap at the cuts.
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(init + b"".join(segs[n] for n in range(4)))
    _same_samples(_packet_hashes(joined, "v:0"), _packet_hashes(src, "v:0"), 0)
    _same_samples(_packet_hashes(joined, "a:0"), _packet_hashes(src, "a:0"), 1)
    audio = [float(p["pts_time"]) for p in _packets(joined, "a:0")]
    steps = {round(b - a, 5) for a, b in zip(audio, audio[1:])}
    assert steps == {round(1024 / 48000, 5)}, steps
    p = run(["ffmpeg", "-v", "error", "-i", str(joined), "-f", "null", "-"], timeout=120)
    assert p.stderr_text.strip() == "", p.stderr_text

    # Players: ffmpeg reads the presigned media playlist through to the end; mpv plays it.
    out = tmp_path / "out.mp4"
    run(["ffmpeg", "-v", "error", "-y", "-i", _master(hls_gw, key, quality="original"), "-c", "copy", str(out)],
        timeout=300)
    info = _ffprobe(str(out), "format=duration")
    assert abs(float(info["format"]["duration"]) - COPY_DURATION) < 0.2, info
    _same_samples(_packet_hashes(out, "v:0"), _packet_hashes(src, "v:0"), 0)
    env = hls_gw.client_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    p = run(["mpv", "--no-config", "--vo=null", "--ao=null", "--frames=90", _master(hls_gw, key, quality="original")],
            env=env, timeout=180, check=False)
    assert p.returncode == 0, (p.stdout_text + p.stderr_text)[-3000:]
    assert _encoders_started(hls_gw) == encoders, "a stream copy started an encoder"


def test_vlc_starts_the_stream_copy_at_an_offset(hls_gw, copy_sources):
    """`cvlc --start-time=6` on the presigned `original` playlist: VLC plays from the segment
    holding 6 s (the one from the keyframe at 5 s) to the end, video and audio together."""
    key = _upload(hls_gw, copy_sources["uneven"], "vlc-copied.mp4")
    info = _vlc_remux(hls_gw, _master(hls_gw, key, quality="original"), "--start-time=6")
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["height"] == 360, info
    assert streams["audio"]["codec_name"] == "aac", info
    assert COPY_DURATION - 6 - 0.1 <= float(info["format"]["duration"]) <= COPY_DURATION - COPY_STARTS[2] + 0.1, info
    starts = [float(streams[t]["start_time"]) for t in ("video", "audio")]
    assert abs(starts[0] - starts[1]) <= 0.05, info


def test_stream_copy_falls_back_to_transcodes_for_vp8(hls_gw, copy_sources):
    key = _upload(hls_gw, copy_sources["vp8"], "vp8.webm")
    _, _, body = _fetch(_master(hls_gw, key))
    text = body.decode()
    assert [_params(u)["quality"] for u in _uris(hls_gw, text)] == ["240"], text
    assert "original" not in text
    code, _, err = _error(_master(hls_gw, key, quality="original"))
    assert code == 400 and err == "InvalidArgument", (code, err)
    code, _, err = _error(_master(hls_gw, key, quality="original", segment=0))
    assert code == 400 and err == "InvalidArgument", (code, err)
    # The transcode is still there.
    _, urls = _media_playlist(hls_gw, key, 240)
    status, _, seg = _fetch(urls[1])
    assert status == 200 and seg[4:8] == b"moof"
