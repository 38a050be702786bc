"""s3cmd (Debian package) against the gateway, with a config file written by the test."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import new_bucket_name, run
from nebula_helpers import MIB, make_random_file, md5_file, sha256_file

pytestmark = pytest.mark.skipif(shutil.which("s3cmd") is None, reason="s3cmd not installed")


class S3cmd:
    def __init__(self, gw, cfg_dir):
        self.cfg = cfg_dir / "s3cfg"
        self.cfg.write_text(
            "[default]\n"
            f"access_key = {gw.access_key}\n"
            f"secret_key = {gw.secret_key}\n"
            f"host_base = {gw.hostport}\n"
            f"host_bucket = {gw.hostport}\n"
            f"bucket_location = {gw.region}\n"
            "use_https = False\n"
            "signature_v2 = False\n"
            "check_ssl_certificate = False\n"
            "guess_mime_type = True\n"
            "progress_meter = False\n"
        )
        self.env = gw.client_env(HOME=str(cfg_dir))

    def __call__(self, *args, check=True, timeout=600):
        return run(["s3cmd", "-c", str(self.cfg), "--no-progress", *map(str, args)], env=self.env, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def s3cmd(gw, tmp_path_factory):
    return S3cmd(gw, tmp_path_factory.mktemp("s3cmd-home"))


@pytest.fixture(scope="module")
def sbucket(s3cmd):
    name = new_bucket_name("s3cmd")
    s3cmd("mb", f"s3://{name}")
    return name


def test_s3cmd_mb_ls_rb(s3cmd):
    name = new_bucket_name("s3cmb")
    p = s3cmd("mb", f"s3://{name}")
    assert f"Bucket 's3://{name}/' created" in p.stdout_text
    assert f"s3://{name}" in s3cmd("ls").stdout_text
    p = s3cmd("rb", f"s3://{name}")
    assert f"Bucket 's3://{name}/' removed" in p.stdout_text
    assert f"s3://{name}" not in s3cmd("ls").stdout_text


def test_s3cmd_put_get_small(s3cmd, sbucket, tmp_path):
    src = tmp_path / "note.txt"
    want = make_random_file(src, 5000)
    s3cmd("put", src, f"s3://{sbucket}/small/note.txt")
    out = tmp_path / "note.out"
    s3cmd("get", f"s3://{sbucket}/small/note.txt", out)
    assert sha256_file(out) == want


def test_s3cmd_put_multipart_20mib(s3cmd, sbucket, tmp_path, gw):
    src = tmp_path / "twenty.bin"
    want = make_random_file(src, 20 * MIB)
    s3cmd("put", "--multipart-chunk-size-mb=5", src, f"s3://{sbucket}/mp/twenty.bin")
    h = gw.raw().head(sbucket, "mp/twenty.bin")
    assert h.header("etag", "").strip('"').endswith("-4"), h
    out = tmp_path / "twenty.out"
    s3cmd("get", f"s3://{sbucket}/mp/twenty.bin", out)
    assert sha256_file(out) == want


def test_s3cmd_ls_and_la(s3cmd, sbucket, tmp_path):
    src = tmp_path / "x.txt"
    make_random_file(src, 10)
    for k in ("ls/a.txt", "ls/b/c.txt", "ls/b/d.txt"):
        s3cmd("put", src, f"s3://{sbucket}/{k}")
    out = s3cmd("ls", f"s3://{sbucket}/ls/").stdout_text
    assert f"s3://{sbucket}/ls/a.txt" in out
    assert any("DIR" in l and l.endswith(f"s3://{sbucket}/ls/b/") for l in out.splitlines()), out
    out = s3cmd("ls", "--recursive", f"s3://{sbucket}/ls/").stdout_text
    for k in ("ls/a.txt", "ls/b/c.txt", "ls/b/d.txt"):
        assert f"s3://{sbucket}/{k}" in out
    out = s3cmd("la").stdout_text
    assert f"s3://{sbucket}/ls/a.txt" in out or f"s3://{sbucket}/ls/" in out


def test_s3cmd_info(s3cmd, sbucket, tmp_path):
    src = tmp_path / "info.html"
    src.write_text("<html><body>info</body></html>")
    s3cmd("put", "--mime-type=text/html", "--add-header=x-amz-meta-origin:s3cmd", src, f"s3://{sbucket}/info/page.html")
    out = s3cmd("info", f"s3://{sbucket}/info/page.html").stdout_text
    assert f"s3://{sbucket}/info/page.html" in out
    assert "text/html" in out
    assert md5_file(src) in out
    assert str(src.stat().st_size) in out


def test_s3cmd_del(s3cmd, sbucket, tmp_path):
    src = tmp_path / "gone.txt"
    make_random_file(src, 100)
    s3cmd("put", src, f"s3://{sbucket}/del/gone.txt")
    p = s3cmd("del", f"s3://{sbucket}/del/gone.txt")
    assert "delete: " in p.stdout_text
    assert "gone.txt" not in s3cmd("ls", "--recursive", f"s3://{sbucket}/del/").stdout_text
    # recursive delete
    for i in range(5):
        s3cmd("put", src, f"s3://{sbucket}/del/many/{i}.txt")
    s3cmd("del", "--recursive", "--force", f"s3://{sbucket}/del/many/")
    assert s3cmd("ls", "--recursive", f"s3://{sbucket}/del/").stdout_text.strip() == ""


def test_s3cmd_sync(s3cmd, sbucket, tmp_path):
    src = tmp_path / "tree"
    for i in range(8):
        make_random_file(src / f"d{i % 2}" / f"f{i}.dat", 3000 + i)
    make_random_file(src / "root.dat", 64)
    s3cmd("sync", f"{src}/", f"s3://{sbucket}/sync/")
    p = s3cmd("sync", f"{src}/", f"s3://{sbucket}/sync/")
    assert "upload:" not in p.stdout_text, p.stdout_text
    (src / "d0" / "f0.dat").unlink()
    make_random_file(src / "d1" / "f1.dat", 9999)
    s3cmd("sync", "--delete-removed", f"{src}/", f"s3://{sbucket}/sync/")
    dst = tmp_path / "down"
    dst.mkdir()
    s3cmd("sync", f"s3://{sbucket}/sync/", f"{dst}/")
    want = {str(p.relative_to(src)): sha256_file(p) for p in src.rglob("*") if p.is_file()}
    got = {str(p.relative_to(dst)): sha256_file(p) for p in dst.rglob("*") if p.is_file()}
    assert got == want
