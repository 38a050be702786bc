"""The `nebula` command-line client against a real gateway.

The client binary is ``$NEBULA_CLI_BIN`` or ``<repo>/target/debug/nebula`` (``cargo build --workspace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, cli_bin, free_port, new_bucket_name, run
from nebula_helpers import cli_env, make_random_file, sha256_file, strip_ns

MIB = 1024 * 1024


def nebula(gw, tmp_path, *args, check=True, timeout=600, env_extra=None, cwd=None):
    return run([cli_bin(), *args], env=cli_env(gw, tmp_path, **(env_extra or {})), check=check, timeout=timeout, cwd=cwd)


def list_parts(gw, bucket, key) -> int:
    """Parts of the newest unfinished upload of `key` (0 when there is none)."""
    raw = gw.raw()
    r = raw.request("GET", f"/{bucket}", query=[("uploads", ""), ("prefix", key)])
    assert r.status == 200, r
    ids = [u.findtext("UploadId") for u in strip_ns(r.xml()).iter("Upload") if u.findtext("Key") == key]
    if not ids:
        return 0
    r = raw.request("GET", f"/{bucket}/{key}", query=[("uploadId", ids[-1])])
    assert r.status == 200, r
    return len(list(strip_ns(r.xml()).iter("Part")))


def put_requests(gw, mark, bucket, key) -> int:
    return sum(1 for l in gw.log_since(mark).splitlines() if "method=PUT" in l and f"path=/{bucket}/{key} " in l)


# ------------------------------------------------------------------------------------------------


def test_cli_round_trip_small(gw, bucket, tmp_path):
    src = tmp_path / "note.txt"
    src.write_bytes(b"hello nebula\n" * 1000)
    p = nebula(gw, tmp_path, "upload", str(src), "--bucket", bucket, "--description", "a small note")
    assert p.stdout_text.strip() == "note.txt"
    head = gw.raw().request("HEAD", f"/{bucket}/note.txt")
    assert head.header("x-amz-meta-description") == "a small note"

    ls = nebula(gw, tmp_path, "ls", "--bucket", bucket)
    assert "note.txt" in ls.stdout_text and "text/plain" in ls.stdout_text
    items = json.loads(nebula(gw, tmp_path, "ls", "--bucket", bucket, "--json").stdout_text)
    assert [(i["key"], i["size"]) for i in items] == [("note.txt", src.stat().st_size)]

    out = tmp_path / "back.txt"
    nebula(gw, tmp_path, "download", "note.txt", "--bucket", bucket, "-o", str(out))
    assert sha256_file(out) == sha256_file(src)


def test_cli_ls_limit_skip(gw, bucket, tmp_path):
    for i in range(5):
        gw.raw().put(bucket, f"dir/f{i}.bin", b"x" * (i + 1))
    items = json.loads(nebula(gw, tmp_path, "ls", "dir/", "--bucket", bucket, "--skip", "1", "--limit", "2", "--json").stdout_text)
    assert [i["key"] for i in items] == ["dir/f1.bin", "dir/f2.bin"]


@pytest.mark.slow
def test_cli_round_trip_100mib(gw, bucket, tmp_path):
    src = tmp_path / "big.bin"
    make_random_file(src, 100 * MIB)
    mark = gw.log_mark()
    nebula(gw, tmp_path, "upload", str(src), "--bucket", bucket, "--key", "media/big.bin")
    assert put_requests(gw, mark, bucket, "media/big.bin") == 13, "expected 13 parts of 8 MiB"
    out = tmp_path / "big.out"
    nebula(gw, tmp_path, "download", "media/big.bin", "--bucket", bucket, "-o", str(out))
    assert sha256_file(out) == sha256_file(src)


@pytest.mark.slow
def test_cli_upload_resumes_after_kill(gw, bucket, tmp_path):
    src = tmp_path / "resume.bin"
    make_random_file(src, 100 * MIB)
    key = "resume.bin"
    # A bandwidth limit keeps the first run slow enough to be killed part-way.
    proc = subprocess.Popen(
        [cli_bin(), "upload", str(src), "--bucket", bucket, "--limit-rate", "16M"],
        env=cli_env(gw, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while list_parts(gw, bucket, key) < 2:
            assert proc.poll() is None, f"upload ended before it could be interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "no parts appeared within 60 s"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # let the gateway drop the cut-off parts
    before = list_parts(gw, bucket, key)
    assert 2 <= before < 13

    mark = gw.log_mark()
    p = nebula(gw, tmp_path, "upload", str(src), "--bucket", bucket)
    assert "resum" in p.stderr_text, p.stderr_text
    assert put_requests(gw, mark, bucket, key) == 13 - before, "already uploaded parts were sent again"
    out = tmp_path / "resume.out"
    nebula(gw, tmp_path, "download", key, "--bucket", bucket, "-o", str(out))
    assert sha256_file(out) == sha256_file(src)


def test_cli_download_resumes_partial_file(gw, bucket, tmp_path):
    src = tmp_path / "data.bin"
    make_random_file(src, 3 * MIB + 123)
    nebula(gw, tmp_path, "upload", str(src), "--bucket", bucket)
    out = tmp_path / "data.out"
    nebula(gw, tmp_path, "download", "data.bin", "--bucket", bucket, "-o", str(out))
    with open(out, "r+b") as f:
        f.truncate(MIB + 7)
    mark = gw.log_mark()
    p = nebula(gw, tmp_path, "download", "data.bin", "--bucket", bucket, "-o", str(out))
    assert f"range=bytes={MIB + 7}-" in gw.log_since(mark)
    assert "resumed" in p.stderr_text
    assert sha256_file(out) == sha256_file(src)

    # A partial file whose object changed since is restarted, not spliced.
    with open(out, "r+b") as f:
        f.truncate(MIB)
    make_random_file(src, 2 * MIB)
    nebula(gw, tmp_path, "upload", str(src), "--bucket", bucket)
    nebula(gw, tmp_path, "download", "data.bin", "--bucket", bucket, "-o", str(out))
    assert sha256_file(out) == sha256_file(src)


def test_cli_presign_limits(gw, bucket, tmp_path):
    gw.raw().put(bucket, "p.txt", b"presigned")
    url = nebula(gw, tmp_path, "presign", "p.txt", "--bucket", bucket, "--expires", "10m").stdout_text.strip()
    assert run(["curl", "-sf", url]).stdout == b"presigned"
    p = nebula(gw, tmp_path, "presign", "p.txt", "--bucket", bucket, "--expires", "8d", check=False)
    assert p.returncode == 2


# ------------------------------------------------------------------------------------------------
# media


def _tools(*names):
    return pytest.mark.skipif(not all(shutil.which(n) for n in names), reason=f"{', '.join(names)} required")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-media") / "clip.mp4"
    pipeline = (
        "videotestsrc num-buffers=150 pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 "
        "! x264enc speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=baseline ! h264parse ! queue ! mux. "
        "audiotestsrc num-buffers=250 samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 ! audioconvert "
        "! avenc_aac ! aacparse ! queue ! mux. "
        f"mp4mux name=mux faststart=true ! filesink location={out}"
    )
    run(["gst-launch-1.0", "-q", "-e", *pipeline.split()], timeout=180)
    return out


@pytest.fixture(scope="module")
def media_bucket(gw, clip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-media-up")
    bucket = new_bucket_name("cli")
    assert gw.raw().put_bucket(bucket).status == 200
    nebula(gw, tmp, "upload", str(clip), "--bucket", bucket, "--key", "videos/clip.mp4")
    return bucket


MPV_ARGS = ["--", "--no-config", "--vo=null", "--ao=null", "--frames=10"]


@_tools("gst-launch-1.0", "mpv", "curl")
def test_cli_play_print_url(gw, media_bucket, clip, tmp_path):
    url = nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--print-url").stdout_text.strip()
    got = tmp_path / "via-curl.mp4"
    run(["curl", "-sf", "-o", str(got), url])
    assert sha256_file(got) == sha256_file(clip)
    run(["mpv", "--no-config", "--vo=null", "--ao=null", "--frames=10", url], env=cli_env(gw, tmp_path), timeout=120)


@_tools("gst-launch-1.0", "mpv")
def test_cli_play_live_transcode_in_mpv(gw, media_bucket, tmp_path):
    mark = gw.log_mark()
    nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--quality", "360", "--live", "--player", "mpv", *MPV_ARGS, timeout=300)
    assert "live transcode started" in gw.log_since(mark)


@_tools("gst-launch-1.0", "mpv")
def test_cli_play_uses_hls_for_transcodes(gw, media_bucket, tmp_path):
    args = ["play", "videos/clip.mp4", "--bucket", media_bucket, "--print-url"]
    auto = nebula(gw, tmp_path, *args, "--quality", "auto").stdout_text.strip()
    assert "stream=hls" in auto and "quality=" not in auto, auto
    one = nebula(gw, tmp_path, *args, "--quality", "240").stdout_text.strip()
    assert "stream=hls" in one and "quality=240" in one and "transcode=" not in one, one
    with urllib.request.urlopen(auto, timeout=120) as r:
        assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        assert r.read().startswith(b"#EXTM3U")
    prefix = hashlib.md5(f"{media_bucket}\0videos/clip.mp4".encode()).hexdigest()
    segments = lambda: list((gw.data_dir / ".nebula" / "renditions").glob(f"{prefix}-*.hls/*.m4s"))  # noqa: E731
    before = len(segments())
    mark = gw.log_mark()
    nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--quality", "auto", "--player", "mpv", *MPV_ARGS, timeout=300)
    assert len(segments()) > before, "mpv played without HLS segments being produced"
    assert "live transcode started" not in gw.log_since(mark)


@_tools("gst-launch-1.0", "mpv")
def test_cli_play_start(gw, media_bucket, tmp_path):
    p = nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--start", "0:03", "--player", "mpv",
               "--", "--no-config", "--vo=null", "--ao=null", "--frames=5", "--term-playing-msg=NEBULA_START=${=time-pos}",
               timeout=300)
    m = re.search(r"NEBULA_START=([0-9.]+)", p.stdout_text + p.stderr_text)
    assert m and abs(float(m.group(1)) - 3.0) < 0.5, p.stdout_text[-2000:]
    # HLS: mpv (FFmpeg 5.1) cannot seek in fMP4 HLS, so the playlists begin at the segment
    # holding the moment (at=4: segment 1, from 3.2 s), which mpv plays from its start.
    url = nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--quality", "240", "--start", "0:04",
                 "--print-url").stdout_text.strip()
    assert "stream=hls" in url and "at=4" in url, url
    p = nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--quality", "240", "--start", "0:04",
               "--player", "mpv", "--", "--no-config", "--vo=null", "--ao=null", "--frames=5",
               "--term-playing-msg=NEBULA_START=${=demuxer-start-time}", timeout=300)
    m = re.search(r"NEBULA_START=([0-9.]+)", p.stdout_text + p.stderr_text)
    assert m and abs(float(m.group(1)) - 3.2) < 0.1, p.stdout_text[-2000:]
    bad = nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--start", "1:75", check=False)
    assert bad.returncode != 0 and "1:23:45" in bad.stderr_text


@_tools("gst-launch-1.0", "ffprobe")
def test_cli_presign_hls(gw, media_bucket, tmp_path):
    url = nebula(gw, tmp_path, "presign", "videos/clip.mp4", "--bucket", media_bucket, "--hls", "--expires", "10m").stdout_text.strip()
    assert "stream=hls" in url and "X-Amz-Expires=600" in url, url
    p = run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", url], timeout=180)
    assert {"h264", "aac"} <= set(p.stdout_text.split()), p.stdout_text


def test_cli_play_missing_player(gw, bucket, tmp_path):
    gw.raw().put(bucket, "v.mp4", b"not really a video")
    p = nebula(gw, tmp_path, "play", "v.mp4", "--bucket", bucket, "--player", "vlc", check=False, env_extra={"PATH": str(tmp_path)})
    assert p.returncode == 1
    assert "vlc is not installed" in p.stderr_text and "apt install vlc" in p.stderr_text


@_tools("gst-launch-1.0")
def test_cli_transcode_jobs(gw, media_bucket, tmp_path):
    created = json.loads(nebula(gw, tmp_path, "transcode", "videos/clip.mp4", "--bucket", media_bucket, "-q", "240", "--json").stdout_text)
    assert len(created) == 1 and int(created[0]["quality"]) == 240
    p = nebula(gw, tmp_path, "transcode-status", "videos/clip.mp4", "--bucket", media_bucket, "--watch", "--json", timeout=300)
    final = json.loads(p.stdout_text)
    assert final and all(j["status"] == "completed" for j in final), final
    listed = json.loads(nebula(gw, tmp_path, "transcode-jobs", "--status", "completed", "--json").stdout_text)
    assert str(created[0]["id"]) in {str(j["id"]) for j in listed}


def test_cli_transcode_cancel_unknown_job(gw, tmp_path):
    p = nebula(gw, tmp_path, "transcode-cancel", "no-such-job", check=False)
    assert p.returncode == 3, p.stderr_text


# ------------------------------------------------------------------------------------------------
# configuration, status, errors


def test_cli_ping_status_json(gw, tmp_path):
    ping = json.loads(nebula(gw, tmp_path, "ping", "--json").stdout_text)
    assert ping["nebula"] is True and ping["version"]
    status = json.loads(nebula(gw, tmp_path, "status", "--json").stdout_text)
    assert status["status"] in ("ok", "degraded")
    text = nebula(gw, tmp_path, "status").stdout_text
    assert "Gateway" in text and "Memory" in text


def test_cli_local_remote_selection(gw, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    env = {"NEBULA_SERVER_URL": "", "NEBULA_LOCAL_URL": closed, "NEBULA_REMOTE_URL": gw.endpoint}
    t = time.monotonic()
    p = nebula(gw, tmp_path, "ping", "--json", env_extra=env)
    assert json.loads(p.stdout_text)["url"] == gw.endpoint
    assert "remote" in p.stderr_text and closed in p.stderr_text
    assert time.monotonic() - t < 10
    env = {"NEBULA_SERVER_URL": "", "NEBULA_LOCAL_URL": gw.endpoint, "NEBULA_REMOTE_URL": closed}
    p = nebula(gw, tmp_path, "ping", "--json", env_extra=env)
    assert json.loads(p.stdout_text)["url"] == gw.endpoint and "local" in p.stderr_text


def test_cli_config_file(gw, bucket, tmp_path):
    env = {"NEBULA_SERVER_URL": "", "NEBULA_ACCESS_KEY": "", "NEBULA_SECRET_KEY": ""}
    nebula(gw, tmp_path, "--server", gw.endpoint, "config", "--access-key", gw.access_key, "--secret-key", gw.secret_key, "--bucket", bucket, env_extra=env)
    cfg = tmp_path / "cfg" / "nebula" / "config.toml"
    assert cfg.stat().st_mode & 0o777 == 0o600
    assert f'bucket = "{bucket}"' in cfg.read_text()
    shown = nebula(gw, tmp_path, "config", env_extra=env).stdout_text
    assert gw.secret_key not in shown
    nebula(gw, tmp_path, "ls", env_extra=env)


def test_cli_errors_and_exit_codes(gw, bucket, tmp_path):
    p = nebula(gw, tmp_path, "ls", "--bucket", bucket, check=False, env_extra={"NEBULA_SECRET_KEY": "wrong-secret"})
    assert p.returncode == 3 and "rejected the keys" in p.stderr_text, p.stderr_text
    assert "Traceback" not in p.stderr_text and "panicked" not in p.stderr_text
    p = nebula(gw, tmp_path, "download", "missing.bin", "--bucket", bucket, check=False)
    assert p.returncode == 3 and "does not exist" in p.stderr_text, p.stderr_text
    p = nebula(gw, tmp_path, "upload", "--bucket", bucket, check=False)
    assert p.returncode == 2
    p = nebula(gw, tmp_path, "upload", str(tmp_path / "nope.bin"), "--bucket", bucket, check=False)
    assert p.returncode == 1 and "nope.bin" in p.stderr_text
    assert "Exit codes" in nebula(gw, tmp_path, "--help").stdout_text


def test_cli_stopped_gateway(start_gateway, tmp_path):
    g = start_gateway()
    endpoint = g.endpoint
    g.stop()
    p = run([cli_bin(), "ls", "--bucket", "anything"], env=cli_env(g, tmp_path, NEBULA_SERVER_URL=endpoint), check=False)
    assert p.returncode == 4 and "cannot reach the gateway" in p.stderr_text, p.stderr_text


# ------------------------------------------------------------------------------------------------
# buckets and objects by name (mb, rb, rm, cp, mv), the default bucket, and hints that run as
# printed


def hints(text: str) -> list[list[str]]:
    """The commands a message suggests (between backticks), as argv for the binary under test."""
    cmds = [shlex.split(c) for c in re.findall(r"`(nebula [^`]*)`", text)]
    assert cmds, f"no runnable hint in: {text!r}"
    return [[cli_bin(), *c[1:]] for c in cmds]


def run_hint(gw, tmp_path, cmd, **kw):
    """Runs a hint exactly as printed (stdin is not a terminal, as in a script)."""
    return run(cmd, env=cli_env(gw, tmp_path), input=b"", **kw)


def list_keys(raw, bucket) -> list[str]:
    keys, token = [], None
    while True:
        q = [("list-type", "2")] + ([("continuation-token", token)] if token else [])
        r = raw.request("GET", f"/{bucket}", query=q)
        assert r.status == 200, r
        doc = strip_ns(r.xml())
        keys += [c.findtext("Key") for c in doc.iter("Contents")]
        token = doc.findtext("NextContinuationToken")
        if doc.findtext("IsTruncated") != "true":
            return keys


def test_cli_mb_rb(gw, tmp_path):
    raw = gw.raw()
    b = new_bucket_name("mb")
    p = nebula(gw, tmp_path, "mb", b)
    assert p.stdout_text.strip() == f"created s3://{b}"
    assert raw.request("HEAD", f"/{b}").status == 200
    # No default bucket is configured: mb says how to make this one the default.
    assert [c[1:] for c in hints(p.stderr_text)] == [["config", "--bucket", b]]
    p = nebula(gw, tmp_path, "mb", b, check=False)
    assert p.returncode == 3 and "already exists" in p.stderr_text, p.stderr_text
    p = nebula(gw, tmp_path, "mb", "Not_A_Bucket", check=False)
    assert p.returncode == 3 and "not a valid bucket name" in p.stderr_text, p.stderr_text

    assert raw.put(b, "a.txt", b"a").status == 200
    p = nebula(gw, tmp_path, "rb", b, check=False)
    assert p.returncode == 3 and "not empty" in p.stderr_text, p.stderr_text
    assert raw.request("HEAD", f"/{b}").status == 200
    empty, remove = hints(p.stderr_text)
    assert "deleted 1 object under" in run_hint(gw, tmp_path, empty).stdout_text
    assert run_hint(gw, tmp_path, remove).stdout_text.strip() == f"removed s3://{b}"
    assert raw.request("HEAD", f"/{b}").status == 404
    p = nebula(gw, tmp_path, "rb", b, check=False)
    assert p.returncode == 3 and f"`nebula mb {b}`" in p.stderr_text, p.stderr_text


def deletes(gw, mark, bucket) -> tuple[int, int]:
    """DeleteObjects (POST on the bucket) and DeleteObject requests since `mark`."""
    lines = gw.log_since(mark).splitlines()
    batch = sum(1 for l in lines if "method=POST" in l and f"path=/{bucket} " in l)
    single = sum(1 for l in lines if "method=DELETE" in l and f"path=/{bucket}/" in l)
    return batch, single


def test_cli_rm(gw, bucket, tmp_path):
    raw = gw.raw()
    for k in ("a.txt", "my file.txt", "dir/x", "dir/sub/y", "dirx"):
        assert raw.put(bucket, k, b"x").status == 200
    p = nebula(gw, tmp_path, "rm", "-b", bucket, "a.txt", "my file.txt")
    assert p.stdout_text.splitlines() == [f"deleted s3://{bucket}/a.txt", f"deleted s3://{bucket}/my file.txt"]
    assert list_keys(raw, bucket) == ["dir/sub/y", "dir/x", "dirx"]
    # S3 answers a delete of a missing key with success; the CLI says it is not there.
    p = nebula(gw, tmp_path, "rm", "-b", bucket, "a.txt", check=False)
    assert p.returncode == 3 and "does not exist" in p.stderr_text, p.stderr_text
    # A folder named without -r: the hint deletes what is in it, and nothing else.
    p = nebula(gw, tmp_path, "rm", "-b", bucket, "dir", check=False)
    assert p.returncode == 2, p.stderr_text
    [cmd] = hints(p.stderr_text)
    assert run_hint(gw, tmp_path, cmd).stdout_text.strip() == f"deleted 2 objects under s3://{bucket}/dir/"
    assert list_keys(raw, bucket) == ["dirx"]
    p = nebula(gw, tmp_path, "rm", "-r", "-b", bucket, "nothing-here/", check=False)
    assert p.returncode == 3, p.stderr_text

    # The whole bucket (more than one listing page): never without confirmation.
    many = [f"many/{i:04d}" for i in range(1001)]
    with ThreadPoolExecutor(8) as pool:
        assert all(r.status == 200 for r in pool.map(lambda k: gw.raw().put(bucket, k, b"m"), many))
    p = run([cli_bin(), "rm", "-r", "-b", bucket], env=cli_env(gw, tmp_path), input=b"", check=False)
    assert p.returncode == 2 and len(list_keys(raw, bucket)) == 1002, p.stderr_text
    [cmd] = hints(p.stderr_text)
    mark = gw.log_mark()
    assert run_hint(gw, tmp_path, cmd).stdout_text.strip() == f"deleted 1002 objects under s3://{bucket}"
    assert list_keys(raw, bucket) == []
    # Two DeleteObjects requests (1000 keys, then 2), not 1002 DeleteObject ones.
    assert deletes(gw, mark, bucket) == (2, 0), gw.log_since(mark)[-2000:]


def test_cli_cp_mv(gw, bucket, tmp_path):
    raw = gw.raw()
    other = new_bucket_name("cp")
    assert raw.put_bucket(other).status == 200
    data = os.urandom(100_000)
    meta = {"content-type": "video/mp4", "x-amz-meta-description": "the source"}
    assert raw.put(bucket, "clips/src.bin", data, headers=meta).status == 200

    p = nebula(gw, tmp_path, "cp", "-b", bucket, "clips/src.bin", "backup/")
    assert p.stdout_text.strip() == "backup/src.bin"
    copy = raw.get(bucket, "backup/src.bin")
    assert copy.body == data and all(copy.header(k) == v for k, v in meta.items()), copy
    nebula(gw, tmp_path, "cp", "-b", bucket, "clips/src.bin", f"s3://{other}/elsewhere.bin")
    assert raw.get(other, "elsewhere.bin").body == data

    p = nebula(gw, tmp_path, "mv", "-b", bucket, "backup/src.bin", "renamed with space.bin")
    assert "moved" in p.stderr_text and p.stdout_text.strip() == "renamed with space.bin"
    assert raw.request("HEAD", f"/{bucket}/backup/src.bin").status == 404
    assert raw.get(bucket, "renamed with space.bin").body == data
    assert raw.get(bucket, "clips/src.bin").body == data

    p = nebula(gw, tmp_path, "mv", "-b", bucket, "missing.bin", "x.bin", check=False)
    assert p.returncode == 3 and f"s3://{bucket}/missing.bin does not exist" in p.stderr_text, p.stderr_text
    assert raw.request("HEAD", f"/{bucket}/x.bin").status == 404
    p = nebula(gw, tmp_path, "cp", "-b", bucket, "clips/src.bin", "clips/src.bin", check=False)
    assert p.returncode == 2, p.stderr_text


def test_cli_cp_mv_recursive(gw, bucket, tmp_path):
    raw = gw.raw()
    other = new_bucket_name("cpr")
    assert raw.put_bucket(other).status == 200
    tree = {"tree/a.txt": b"a", "tree/sub/b.bin": os.urandom(3000), "tree/sub/c d.txt": b"c & d"}
    for k, v in {**tree, "treeish.txt": b"not under tree/"}.items():
        assert raw.put(bucket, k, v).status == 200

    # A folder named without its slash is still the folder: treeish.txt is not under it.
    p = nebula(gw, tmp_path, "cp", "-r", "-b", bucket, "tree", "backup")
    assert f"copied 3 objects from s3://{bucket}/tree/ to s3://{bucket}/backup/" in p.stderr_text, p.stderr_text
    backup = {k.replace("tree/", "backup/", 1): v for k, v in tree.items()}
    assert sorted(list_keys(raw, bucket)) == sorted([*tree, "treeish.txt", *backup])
    assert all(raw.get(bucket, k).body == v for k, v in backup.items())

    # mv -r to another bucket: copies, then deletes the sources in one DeleteObjects.
    mark = gw.log_mark()
    p = nebula(gw, tmp_path, "mv", "-r", "-b", bucket, "backup/", f"s3://{other}/moved/")
    assert "moved 3 objects" in p.stderr_text, p.stderr_text
    assert deletes(gw, mark, bucket) == (1, 0), gw.log_since(mark)[-2000:]
    assert sorted(list_keys(raw, bucket)) == sorted([*tree, "treeish.txt"])
    moved = {k.replace("tree/", "moved/", 1): v for k, v in tree.items()}
    assert sorted(list_keys(raw, other)) == sorted(moved)
    assert all(raw.get(other, k).body == v for k, v in moved.items())

    # Into itself (it would copy its own copies) and from nothing: refused.
    p = nebula(gw, tmp_path, "cp", "-r", "-b", bucket, "tree/", "tree/inner/", check=False)
    assert p.returncode == 2 and "inside" in p.stderr_text, p.stderr_text
    p = nebula(gw, tmp_path, "cp", "-r", "-b", bucket, "nothing/", "x/", check=False)
    assert p.returncode == 3, p.stderr_text


def test_cli_cp_in_parts_past_the_threshold(gw, bucket, tmp_path):
    """Past S3's 5 GiB CopyObject limit the copy is multipart with UploadPartCopy; the hidden
    --multipart-threshold lowers the limit so 11 MiB shows it (parts of 5, 5 and 1 MiB)."""
    raw = gw.raw()
    data = os.urandom(11 * MIB)
    meta = {"content-type": "video/mp4", "x-amz-meta-description": "the source"}
    assert raw.put(bucket, "big.bin", data, headers=meta).status == 200
    mark = gw.log_mark()
    nebula(gw, tmp_path, "cp", "--multipart-threshold", str(5 * MIB), "-b", bucket, "big.bin", "big copy.bin")
    copy = raw.get(bucket, "big copy.bin")
    assert hashlib.sha256(copy.body).digest() == hashlib.sha256(data).digest()
    assert copy.header("etag").strip('"').endswith("-3"), copy.header("etag")
    assert all(copy.header(k) == v for k, v in meta.items()), copy
    # Three UploadPartCopy requests (PUT with partNumber), no upload left behind.
    assert put_requests(gw, mark, bucket, "big%20copy.bin") + put_requests(gw, mark, bucket, "big copy.bin") == 3, gw.log_since(mark)[-3000:]
    assert list_parts(gw, bucket, "big copy.bin") == 0
    # mv -r takes the same path for each object past the threshold.
    other = new_bucket_name("cpm")
    assert raw.put_bucket(other).status == 200
    nebula(gw, tmp_path, "mv", "-r", "--multipart-threshold", str(5 * MIB), "-b", bucket, "", f"s3://{other}/moved/")
    assert list_keys(raw, bucket) == [] and list_keys(raw, other) == ["moved/big copy.bin", "moved/big.bin"]
    for k in ("moved/big copy.bin", "moved/big.bin"):
        got = raw.get(other, k)
        assert got.header("etag").strip('"').endswith("-3") and hashlib.sha256(got.body).digest() == hashlib.sha256(data).digest()


def test_cli_default_bucket(start_gateway, tmp_path):
    # Outside us-east-1, CreateBucket must name the region: the CLI's buckets are made there.
    g = start_gateway(region="eu-west-1")
    src = tmp_path / "first.txt"
    src.write_bytes(b"first upload\n")
    # Nothing configured: the error says what to run, and after it the first upload creates
    # the default bucket.
    p = nebula(g, tmp_path, "upload", str(src), check=False)
    assert p.returncode == 2, p.stderr_text
    [cmd] = hints(p.stderr_text)
    run_hint(g, tmp_path, cmd)
    p = nebula(g, tmp_path, "upload", str(src))
    bucket = cmd[-1]
    assert f"created s3://{bucket} (the default bucket)" in p.stderr_text, p.stderr_text
    assert g.raw().get(bucket, "first.txt").body == src.read_bytes()
    assert "created" not in nebula(g, tmp_path, "upload", str(src), "-k", "second.txt").stderr_text
    # A bucket named with -b is not created (a typo would make one); the hint creates it.
    p = nebula(g, tmp_path, "upload", str(src), "-b", "typo-bucket", check=False)
    assert p.returncode == 3 and g.raw().request("HEAD", "/typo-bucket").status == 404, p.stderr_text
    [cmd] = hints(p.stderr_text)
    run_hint(g, tmp_path, cmd)
    nebula(g, tmp_path, "upload", str(src), "-b", "typo-bucket")
    assert g.raw().get("typo-bucket", "first.txt").body == src.read_bytes()


def test_cli_transcode_hint_runs_as_printed(gw, media_bucket, tmp_path):
    p = nebula(gw, tmp_path, "transcode", "videos/clip.mp4", "--bucket", media_bucket, "-q", "360")
    [cmd] = hints(p.stderr_text)
    final = json.loads(run_hint(gw, tmp_path, [*cmd, "--json"], timeout=300).stdout_text)
    assert final and all(j["status"] == "completed" for j in final), final


def test_cli_share(gw, media_bucket, clip, tmp_path):
    p = nebula(gw, tmp_path, "share", "videos/clip.mp4", "-b", media_bucket)
    url = p.stdout_text.strip()
    assert "X-Amz-Expires=604800" in url and "until" in p.stderr_text, p
    # Anyone: curl with no keys at all gets the original bytes.
    assert run(["curl", "-sf", url]).stdout == clip.read_bytes()
    p = nebula(gw, tmp_path, "share", "videos/clip.mp4", "-b", media_bucket, "-q", "240", "--expires", "1h")
    url = p.stdout_text.strip()
    assert "X-Amz-Expires=3600" in url and "quality=240" in url, url
    out = tmp_path / "shared-240.mp4"
    run(["curl", "-sf", "-o", str(out), url], timeout=300)
    probe = json.loads(run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(out)]).stdout)
    assert [s["height"] for s in probe["streams"] if s["codec_type"] == "video"] == [240], probe
    # The quality is inside the signature: another one is refused.
    assert run(["curl", "-s", "-o", os.devnull, "-w", "%{http_code}", url.replace("quality=240", "quality=360")]).stdout == b"403"
    p = nebula(gw, tmp_path, "share", "videos/nope.mp4", "-b", media_bucket, check=False)
    assert p.returncode == 3 and "does not exist" in p.stderr_text and not p.stdout_text, p.stderr_text
    p = nebula(gw, tmp_path, "share", "videos/clip.mp4", "-b", media_bucket, "--expires", "8d", check=False)
    assert p.returncode == 2
