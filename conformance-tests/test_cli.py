"""The `nebula` command-line client against a real gateway.

The client binary is ``$NEBULA_CLI_BIN`` or ``<repo>/target/debug/nebula`` (``cargo build --workspace``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, cli_bin, free_port, new_bucket_name, run
from nebula_helpers import make_random_file, sha256_file, strip_ns

MIB = 1024 * 1024


def cli_env(gw, tmp_path, **extra) -> dict:
    env = gw.client_env(
        NEBULA_SERVER_URL=gw.endpoint,
        NEBULA_ACCESS_KEY=gw.access_key,
        NEBULA_SECRET_KEY=gw.secret_key,
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
        HOME=str(tmp_path),
    )
    env.update({k: str(v) for k, v in extra.items()})
    return {k: v for k, v in env.items() if v != ""}


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
def test_cli_play_transcode_in_mpv(gw, media_bucket, tmp_path):
    mark = gw.log_mark()
    nebula(gw, tmp_path, "play", "videos/clip.mp4", "--bucket", media_bucket, "--quality", "360", "--player", "mpv", *MPV_ARGS, timeout=300)
    assert "live transcode started" in gw.log_since(mark)


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
