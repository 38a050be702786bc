"""Posters: ``?thumbnail=W`` (and ``&at=SECONDS``) on GetObject, through presigned URLs.

Sources are generated here with GStreamer test sources (nothing is downloaded): a 4 s 640x360
H.264 + AAC MP4 of a moving ball (a different picture every frame), a 320x240 one to replace it,
an audio-only M4A and a text file. Posters are fetched with curl, decoded with ffprobe, served
again from the renditions store as files, and invalidated when the object is replaced. The
catalog's files API lists a `poster` for probed videos only, and `nebula ls --json` prints a
presigned poster URL for them that serves the JPEG.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import cli_bin, run
from nebula_helpers import presign, xml_error_code

pytestmark = pytest.mark.timeout(300)

BUCKET = "poster-tests"


def _gst(*pipeline: str) -> None:
    run(["gst-launch-1.0", "-q", *pipeline], timeout=120)


def _video(path: Path, width: int, height: int, pattern: str) -> Path:
    _gst(
        *f"videotestsrc num-buffers=120 pattern={pattern} ! video/x-raw,width={width},height={height},framerate=30/1 "
        f"! x264enc speed-preset=ultrafast key-int-max=60 ! h264parse ! queue ! mp4mux name=m "
        f"! filesink location={path} "
        f"audiotestsrc num-buffers=188 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 ! audioconvert "
        f"! avenc_aac ! aacparse ! queue ! m.".split()
    )
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("poster-src")
    m4a = d / "tone.m4a"
    _gst(
        *f"audiotestsrc num-buffers=94 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 ! audioconvert "
        f"! avenc_aac ! aacparse ! mp4mux ! filesink location={m4a}".split()
    )
    txt = d / "notes.txt"
    txt.write_text("not a video\n" * 100)
    return {
        "ball": _video(d / "ball.mp4", 640, 360, "ball"),
        "small": _video(d / "small.mp4", 320, 240, "smpte"),
        "m4a": m4a,
        "txt": txt,
    }


@pytest.fixture(scope="module")
def poster_gw(tmp_path_factory, sources):
    from conftest import Gateway

    g = Gateway(tmp_path_factory.mktemp("gw-posters"))
    g.start()
    raw = g.raw()
    assert raw.put_bucket(BUCKET).status == 200
    for name, path in (
        ("ball.mp4", sources["ball"]),
        ("tone.m4a", sources["m4a"]),
        ("notes.txt", sources["txt"]),
    ):
        r = raw.put(BUCKET, name, path.read_bytes())
        assert r.status == 200, r
    yield g
    g.assert_clean_exit()


def _url(g, key: str, **params) -> str:
    query = [(k, str(v)) for k, v in params.items()]
    return g.endpoint + presign(g.creds, "GET", g.hostport, f"/{BUCKET}/{key}", expires=600, extra_query=query)


def _fetch(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _jpeg_size(data: bytes, tmp_path: Path) -> tuple[int, int]:
    """(width, height) of a JPEG as ffprobe decodes it."""
    f = tmp_path / "poster.jpg"
    f.write_bytes(data)
    p = run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(f)], timeout=60)
    streams = json.loads(p.stdout_text)["streams"]
    assert len(streams) == 1 and streams[0]["codec_name"] == "mjpeg", streams
    return streams[0]["width"], streams[0]["height"]


def _poster_files(g) -> list[Path]:
    return sorted((g.data_dir / ".nebula" / "renditions").glob("*.jpg"))


def _wait_gone(files: list[Path]) -> None:
    """The store drops an object's files on the blocking pool, right after the write."""
    deadline = time.monotonic() + 10
    while any(f.exists() for f in files) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [f.name for f in files if f.exists()]
    assert not left, f"{left} outlived the object they were taken from"


def test_presigned_thumbnail_is_a_jpeg_of_that_width(poster_gw, tmp_path):
    out = tmp_path / "p.jpg"
    url = _url(poster_gw, "ball.mp4", thumbnail=320)
    p = run(["curl", "-sS", "-f", "-D", str(tmp_path / "h.txt"), "-o", str(out), url], timeout=120)
    assert p.returncode == 0
    head = (tmp_path / "h.txt").read_text().lower()
    assert "content-type: image/jpeg" in head, head
    assert f"content-length: {out.stat().st_size}" in head, head
    assert "x-nebula-resolution: 320x180" in head, head
    assert _jpeg_size(out.read_bytes(), tmp_path) == (320, 180)


def test_odd_width_and_no_upscaling(poster_gw, tmp_path):
    status, headers, body = _fetch(_url(poster_gw, "ball.mp4", thumbnail=101))
    assert status == 200, body
    assert _jpeg_size(body, tmp_path) == (101, 56)
    status, _, body = _fetch(_url(poster_gw, "ball.mp4", thumbnail=1280))
    assert status == 200, body
    assert _jpeg_size(body, tmp_path) == (640, 360)


def test_at_picks_another_moment(poster_gw):
    bodies = []
    for at in ("0.5", "3"):
        status, _, body = _fetch(_url(poster_gw, "ball.mp4", thumbnail=160, at=at))
        assert status == 200, body
        bodies.append(body)
    assert bodies[0] != bodies[1], "the ball moves: posters at 0.5 s and 3 s must differ"


def test_second_fetch_is_served_from_the_store_as_a_file(poster_gw, tmp_path):
    url = _url(poster_gw, "ball.mp4", thumbnail=200, at="1.5")
    before = set(_poster_files(poster_gw))
    status, first_headers, first = _fetch(url)
    assert status == 200, first
    new = set(_poster_files(poster_gw)) - before
    assert len(new) == 1, "the poster is kept in the renditions store"
    stored = new.pop()
    assert stored.read_bytes() == first
    for name in ("content-length", "etag", "last-modified"):
        assert name in first_headers, first_headers
    assert int(first_headers["content-length"]) == len(first)

    # What is stored under the poster's name is what the next request gets: served from the file.
    other = _fetch(_url(poster_gw, "ball.mp4", thumbnail=160, at="3"))[2]
    stored.write_bytes(other)
    status, headers, again = _fetch(url)
    assert status == 200
    assert again == other
    assert int(headers["content-length"]) == len(other)
    assert headers["etag"] == first_headers["etag"]
    assert headers["last-modified"] == first_headers["last-modified"]
    stored.write_bytes(first)

    status, headers, part = _fetch(url, {"Range": "bytes=0-99"})
    assert status == 206
    assert headers["content-range"] == f"bytes 0-99/{len(first)}"
    assert part == first[:100]


def test_tampered_thumbnail_url_is_403(poster_gw):
    url = _url(poster_gw, "ball.mp4", thumbnail=320, at="1")
    assert _fetch(url)[0] == 200
    for old, new in (("thumbnail=320", "thumbnail=640"), ("at=1", "at=2")):
        assert old in url
        status, _, body = _fetch(url.replace(old, new))
        assert status == 403, body
        assert xml_error_code(body) == "SignatureDoesNotMatch"
    # Added after signing: not covered by the signature either.
    status, _, body = _fetch(_url(poster_gw, "ball.mp4") + "&thumbnail=320")
    assert status == 403, body


@pytest.mark.parametrize(
    "params",
    [
        {"thumbnail": "0"},
        {"thumbnail": "1281"},
        {"thumbnail": "wide"},
        {"thumbnail": "320", "at": "-1"},
        {"thumbnail": "320", "at": "soon"},
        {"thumbnail": "320", "quality": "480"},
        {"at": "3"},
    ],
)
def test_bad_thumbnail_parameters_are_400(poster_gw, params):
    status, _, body = _fetch(_url(poster_gw, "ball.mp4", **params))
    assert status == 400, body
    assert xml_error_code(body) == "InvalidArgument"


@pytest.mark.parametrize("key", ["tone.m4a", "notes.txt"])
def test_thumbnail_of_a_non_video_is_415(poster_gw, key):
    status, _, body = _fetch(_url(poster_gw, key, thumbnail=320))
    assert status == 415, body
    assert xml_error_code(body) == "UnsupportedMediaType"


def test_thumbnail_of_a_missing_key_is_404(poster_gw):
    status, _, body = _fetch(_url(poster_gw, "nope.mp4", thumbnail=320))
    assert status == 404, body
    assert xml_error_code(body) == "NoSuchKey"


def test_overwrite_invalidates_the_poster(poster_gw, sources, tmp_path):
    raw = poster_gw.raw()
    assert raw.put(BUCKET, "swap.mp4", sources["ball"].read_bytes()).status == 200
    url = _url(poster_gw, "swap.mp4", thumbnail=320)
    # The files this object's requests add: ball.mp4 has the same bytes, so a poster with the
    # same content (kept: that object did not change) may already be in the store.
    before = set(_poster_files(poster_gw))
    status, first_headers, body = _fetch(url)
    assert status == 200
    assert _jpeg_size(body, tmp_path) == (320, 180)
    old = sorted(set(_poster_files(poster_gw)) - before)
    assert len(old) == 1 and old[0].read_bytes() == body

    # Other bytes at the same key: a 320x240 picture now, and the old poster file is gone.
    assert raw.put(BUCKET, "swap.mp4", sources["small"].read_bytes()).status == 200
    before = set(_poster_files(poster_gw))
    status, headers, body = _fetch(url)
    assert status == 200
    assert _jpeg_size(body, tmp_path) == (320, 240)
    assert headers["etag"] != first_headers["etag"]
    _wait_gone(old)

    # Deleting the object drops its posters too.
    kept = sorted(set(_poster_files(poster_gw)) - before)
    assert len(kept) == 1 and kept[0].read_bytes() == body
    assert raw.delete(BUCKET, "swap.mp4").status == 204
    _wait_gone(kept)


def _files(g) -> dict[str, dict]:
    """The catalog's items of the bucket by key (`GET /_nebula/v1/files`)."""
    r = g.raw().request("GET", "/_nebula/v1/files", query=[("bucket", BUCKET)])
    assert r.status == 200, r
    return {item["key"]: item for item in json.loads(r.body)["items"]}


def _probed(g) -> dict[str, dict]:
    """The items once the background prober has probed both media objects."""
    deadline = time.monotonic() + 60
    while True:
        items = _files(g)
        if all(items.get(k, {}).get("media") for k in ("ball.mp4", "tone.m4a")):
            return items
        assert time.monotonic() < deadline, f"not probed in 60 s: {items}"
        time.sleep(0.2)


def test_files_api_lists_a_poster_for_probed_videos_only(poster_gw):
    items = _probed(poster_gw)
    # 10 % into the 4 s video: what `?thumbnail=W` alone shows.
    assert items["ball.mp4"]["poster"] == {"at_secs": pytest.approx(0.4, abs=0.05)}, items["ball.mp4"]
    assert items["tone.m4a"]["poster"] is None
    assert items["notes.txt"]["poster"] is None


def test_cli_ls_json_prints_presigned_poster_urls(poster_gw, tmp_path):
    _probed(poster_gw)
    env = poster_gw.client_env(
        NEBULA_SERVER_URL=poster_gw.endpoint,
        NEBULA_ACCESS_KEY=poster_gw.access_key,
        NEBULA_SECRET_KEY=poster_gw.secret_key,
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
        HOME=str(tmp_path),
    )
    p = subprocess.run(
        [cli_bin(), "ls", "--json", "--bucket", BUCKET, "--poster-width", "200"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    items = {i["key"]: i for i in json.loads(p.stdout)}
    assert "poster_url" not in items["tone.m4a"] and "poster_url" not in items["notes.txt"], items
    url = items["ball.mp4"]["poster_url"]
    assert "thumbnail=200" in url and "X-Amz-Signature=" in url and poster_gw.secret_key not in url, url
    # Anyone with the URL gets the poster; editing it is refused.
    status, headers, body = _fetch(url)
    assert status == 200 and headers["content-type"] == "image/jpeg", body
    assert _jpeg_size(body, tmp_path) == (200, 112)
    assert _fetch(url.replace("thumbnail=200", "thumbnail=400"))[0] == 403

    bad = subprocess.run(
        [cli_bin(), "ls", "--json", "--bucket", BUCKET, "--poster-width", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "poster-width" in bad.stderr, bad.stderr
