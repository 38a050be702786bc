"""rclone (Debian package) against the gateway, configured only through environment variables."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import new_bucket_name, run
from nebula_helpers import MIB, make_random_file, md5_file, sha256_file

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")


class Rclone:
    def __init__(self, gw, tmp):
        self.env = gw.client_env(
            RCLONE_CONFIG_NEBULA_TYPE="s3",
            RCLONE_CONFIG_NEBULA_PROVIDER="Other",
            RCLONE_CONFIG_NEBULA_ACCESS_KEY_ID=gw.access_key,
            RCLONE_CONFIG_NEBULA_SECRET_ACCESS_KEY=gw.secret_key,
            RCLONE_CONFIG_NEBULA_ENDPOINT=gw.endpoint,
            RCLONE_CONFIG_NEBULA_REGION=gw.region,
        )
        # rclone's own cache/log dirs inside the test's temp dir
        self.env["XDG_CACHE_HOME"] = str(tmp / "cache")
        self.env["HOME"] = str(tmp)

    def __call__(self, *args, check=True, timeout=600):
        return run(["rclone", "--low-level-retries", "1", "--retries", "1", *map(str, args)], env=self.env, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def rclone(gw, tmp_path_factory):
    return Rclone(gw, tmp_path_factory.mktemp("rclone-home"))


@pytest.fixture(scope="module")
def rbucket(rclone):
    name = new_bucket_name("rclone")
    rclone("mkdir", f"nebula:{name}")
    return name


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("rclone-src")
    for i in range(10):
        make_random_file(root / f"dir{i % 3}" / f"file{i}.bin", 10_000 + i * 1234)
    make_random_file(root / "with space" / "ünïcödé name.txt", 2048)
    make_random_file(root / "top.txt", 99)
    return root


def lsjson(rclone, remote, *flags):
    return json.loads(rclone("lsjson", *flags, remote).stdout_text)


def test_rclone_mkdir_and_lsd(rclone, gw):
    name = new_bucket_name("rcmk")
    rclone("mkdir", f"nebula:{name}")
    assert name in rclone("lsd", "nebula:").stdout_text
    rclone("rmdir", f"nebula:{name}")
    assert name not in rclone("lsd", "nebula:").stdout_text


def test_rclone_copy_and_lsjson(rclone, rbucket, local_tree):
    rclone("copy", local_tree, f"nebula:{rbucket}/copy")
    entries = lsjson(rclone, f"nebula:{rbucket}/copy", "-R", "--files-only", "--hash")
    got = {e["Path"]: e for e in entries}
    want = {str(p.relative_to(local_tree)): p for p in local_tree.rglob("*") if p.is_file()}
    assert set(got) == set(want)
    for rel, p in want.items():
        assert got[rel]["Size"] == p.stat().st_size
        assert got[rel]["Hashes"]["md5"] == md5_file(p), rel
    dirs = lsjson(rclone, f"nebula:{rbucket}/copy", "--dirs-only")
    assert sorted(d["Path"] for d in dirs) == ["dir0", "dir1", "dir2", "with space"]


def test_rclone_check_no_differences(rclone, rbucket, local_tree):
    rclone("copy", local_tree, f"nebula:{rbucket}/check")
    p = rclone("check", local_tree, f"nebula:{rbucket}/check")
    assert "0 differences found" in p.stderr_text, p.stderr_text
    # also byte-for-byte (downloads everything)
    p = rclone("check", "--download", local_tree, f"nebula:{rbucket}/check")
    assert "0 differences found" in p.stderr_text, p.stderr_text


def test_rclone_cat_offset_count(rclone, rbucket, tmp_path):
    src = tmp_path / "cat.bin"
    make_random_file(src, 100_000)
    rclone("copyto", src, f"nebula:{rbucket}/cat/cat.bin")
    data = src.read_bytes()
    p = rclone("cat", "--offset", "1000", "--count", "500", f"nebula:{rbucket}/cat/cat.bin")
    assert p.stdout == data[1000:1500]
    p = rclone("cat", "--offset", "99990", f"nebula:{rbucket}/cat/cat.bin")
    assert p.stdout == data[99990:]
    p = rclone("cat", f"nebula:{rbucket}/cat/cat.bin")
    assert p.stdout == data


def test_rclone_copy_download_roundtrip(rclone, rbucket, local_tree, tmp_path):
    rclone("copy", local_tree, f"nebula:{rbucket}/dl")
    out = tmp_path / "dl"
    rclone("copy", f"nebula:{rbucket}/dl", out)
    for p in local_tree.rglob("*"):
        if p.is_file():
            assert sha256_file(out / p.relative_to(local_tree)) == sha256_file(p)


def test_rclone_sync(rclone, rbucket, local_tree, tmp_path):
    src = tmp_path / "sync-src"
    shutil.copytree(local_tree, src)
    rclone("sync", src, f"nebula:{rbucket}/sync")
    (src / "dir0" / "file0.bin").unlink()
    make_random_file(src / "dir1" / "file1.bin", 4321)
    make_random_file(src / "brand" / "new.bin", 777)
    rclone("sync", src, f"nebula:{rbucket}/sync")
    entries = lsjson(rclone, f"nebula:{rbucket}/sync", "-R", "--files-only")
    want = {str(p.relative_to(src)): p.stat().st_size for p in src.rglob("*") if p.is_file()}
    assert {e["Path"]: e["Size"] for e in entries} == want
    p = rclone("check", src, f"nebula:{rbucket}/sync")
    assert "0 differences found" in p.stderr_text


def test_rclone_delete(rclone, rbucket, local_tree):
    rclone("copy", local_tree, f"nebula:{rbucket}/del")
    rclone("delete", "--include", "*.bin", f"nebula:{rbucket}/del")
    left = lsjson(rclone, f"nebula:{rbucket}/del", "-R", "--files-only")
    assert sorted(e["Path"] for e in left) == ["top.txt", "with space/ünïcödé name.txt"]
    rclone("deletefile", f"nebula:{rbucket}/del/top.txt")
    rclone("purge", f"nebula:{rbucket}/del")
    assert lsjson(rclone, f"nebula:{rbucket}/del", "-R", "--files-only") == []


@pytest.mark.timeout(600)
def test_rclone_200mib_multipart(rclone, rbucket, gw, tmp_path):
    src = tmp_path / "up" / "big.bin"
    want = make_random_file(src, 200 * MIB)
    rclone("copy", "--s3-chunk-size", "5M", "--s3-upload-cutoff", "5M", "--s3-upload-concurrency", "4", src.parent, f"nebula:{rbucket}/big")
    h = gw.raw().head(rbucket, "big/big.bin")
    assert h.status == 200 and h.header("etag", "").strip('"').endswith("-40"), f"expected a 40-part multipart object: {h}"
    entries = lsjson(rclone, f"nebula:{rbucket}/big", "--files-only")
    assert entries[0]["Size"] == 200 * MIB
    p = rclone("check", src.parent, f"nebula:{rbucket}/big")
    assert "0 differences found" in p.stderr_text, p.stderr_text
    out = tmp_path / "down"
    rclone("copy", f"nebula:{rbucket}/big", out)
    assert sha256_file(out / "big.bin") == want


def test_rclone_key_and_folder_of_the_same_name(rclone, rbucket, tmp_path):
    """rclone uploads `a` and then `a/b` (a file and a folder of one name, as S3 allows) and reads both back."""
    for name, data in (("a", b"file a"), ("a/b", b"below a")):
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        rclone("copyto", src, f"nebula:{rbucket}/same/{name}")
    assert rclone("cat", f"nebula:{rbucket}/same/a").stdout == b"file a"
    assert rclone("cat", f"nebula:{rbucket}/same/a/b").stdout == b"below a"
    files = lsjson(rclone, f"nebula:{rbucket}/same", "-R", "--files-only", "--hash")
    assert sorted((e["Path"], e["Size"]) for e in files) == [("a", 6), ("a/b", 7)]
    rclone("deletefile", f"nebula:{rbucket}/same/a")
    assert rclone("cat", f"nebula:{rbucket}/same/a/b").stdout == b"below a"
