"""AWS SDK for JavaScript v3 (node, pinned in js/package.json) through js/s3ops.mjs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request

import pytest

from conftest import HERE, new_bucket_name, run
from nebula_helpers import MIB, make_random_file, multipart_etag, sha256_bytes, sha256_file

JS = HERE / "js"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")


@pytest.fixture(scope="module")
def node_modules():
    if not (JS / "node_modules" / "@aws-sdk" / "client-s3").is_dir():
        # scripts/setup.sh installs them; do it here too so a bare checkout can run the suite
        run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, timeout=600)
    return JS / "node_modules"


class Js:
    def __init__(self, gw):
        self.env = gw.client_env(NEBULA_ENDPOINT=gw.endpoint)

    def __call__(self, op, expect_error=False, **args):
        p = run(["node", str(JS / "s3ops.mjs"), op, json.dumps(args)], env=self.env, check=False, timeout=600)
        try:
            out = json.loads(p.stdout_text.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            pytest.fail(f"node {op} printed no JSON (rc {p.returncode}):\n{p.stdout_text}\n{p.stderr_text}")
        if not expect_error:
            assert p.returncode == 0 and "error" not in out, f"JS SDK {op} {args} failed: {out}\n{p.stderr_text[-2000:]}"
        return out


@pytest.fixture(scope="module")
def js(gw, node_modules):
    return Js(gw)


@pytest.fixture(scope="module")
def jbucket(js):
    name = new_bucket_name("jssdk")
    js("createBucket", bucket=name)
    return name


def test_js_put_get_head(js, jbucket, tmp_path):
    src = tmp_path / "obj.bin"
    want = make_random_file(src, 256_000)
    r = js("put", bucket=jbucket, key="basic/obj.bin", file=str(src), contentType="application/x-js",
           metadata={"client": "js-sdk-v3"}, cacheControl="max-age=5")
    assert r["ETag"] == '"%s"' % hashlib.md5(src.read_bytes()).hexdigest()
    out = tmp_path / "obj.out"
    g = js("get", bucket=jbucket, key="basic/obj.bin", out=str(out))
    assert sha256_file(out) == want
    assert g["ContentType"] == "application/x-js" and g["Metadata"] == {"client": "js-sdk-v3"}
    h = js("head", bucket=jbucket, key="basic/obj.bin")
    assert h["ContentLength"] == 256_000 and h["CacheControl"] == "max-age=5" and h["ETag"] == r["ETag"]


def test_js_put_stream_with_checksum_trailer(js, jbucket, tmp_path, gw):
    src = tmp_path / "stream.bin"
    want = make_random_file(src, 3 * MIB + 5)
    js("putStream", bucket=jbucket, key="stream/obj.bin", file=str(src))
    out = tmp_path / "stream.out"
    js("get", bucket=jbucket, key="stream/obj.bin", out=str(out))
    assert sha256_file(out) == want
    h = gw.raw().head(jbucket, "stream/obj.bin")
    assert "aws-chunked" not in (h.header("content-encoding") or ""), f"transfer coding stored as Content-Encoding: {h}"


def test_js_get_range(js, jbucket, tmp_path):
    src = tmp_path / "r.bin"
    make_random_file(src, 10_000)
    js("put", bucket=jbucket, key="range/r.bin", file=str(src))
    out = tmp_path / "r.out"
    g = js("get", bucket=jbucket, key="range/r.bin", out=str(out), range="bytes=500-1499")
    assert g["ContentRange"] == "bytes 500-1499/10000"
    assert out.read_bytes() == src.read_bytes()[500:1500]


def test_js_list_paginate(js, jbucket, tmp_path):
    keys = sorted([f"list/a/{i:02d}" for i in range(14)] + [f"list/b/{i:02d}" for i in range(9)] + ["list/top"])
    assert js("putMany", bucket=jbucket, keys=keys)["count"] == len(keys)
    r = js("list", bucket=jbucket, prefix="list/", pageSize=5)
    assert r["keys"] == keys and r["pages"] == 5
    r = js("list", bucket=jbucket, prefix="list/", delimiter="/")
    assert r["keys"] == ["list/top"] and r["prefixes"] == ["list/a/", "list/b/"]


@pytest.mark.timeout(600)
def test_js_lib_storage_multipart_upload(js, jbucket, tmp_path, gw):
    src = tmp_path / "big.bin"
    want = make_random_file(src, 17 * MIB + 3)
    r = js("upload", bucket=jbucket, key="upload/big.bin", file=str(src), partSize=5 * MIB, queueSize=3,
           contentType="video/mp4")
    data = src.read_bytes()
    parts = [data[i : i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    h = js("head", bucket=jbucket, key="upload/big.bin")
    assert h["ContentLength"] == len(data) and h["ContentType"] == "video/mp4"
    assert h["ETag"] == multipart_etag(parts), h
    out = tmp_path / "big.out"
    js("get", bucket=jbucket, key="upload/big.bin", out=str(out))
    assert sha256_file(out) == want


def test_js_presigned_get(js, jbucket, tmp_path, gw):
    src = tmp_path / "p.bin"
    want = make_random_file(src, 77_000)
    js("put", bucket=jbucket, key="presign/p q.bin", file=str(src))
    url = js("presignGet", bucket=jbucket, key="presign/p q.bin", expires=300)["url"]
    assert url.startswith(f"{gw.endpoint}/{jbucket}/presign/p%20q.bin?"), url
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        assert sha256_bytes(resp.read()) == want


def test_js_copy_and_delete(js, jbucket, tmp_path):
    src = tmp_path / "c.bin"
    want = make_random_file(src, 1000)
    js("put", bucket=jbucket, key="cp/src name.bin", file=str(src))
    js("copy", bucket=jbucket, key="cp/dst.bin", source="cp/src name.bin")
    out = tmp_path / "c.out"
    js("get", bucket=jbucket, key="cp/dst.bin", out=str(out))
    assert sha256_file(out) == want
    js("delete", bucket=jbucket, key="cp/dst.bin")
    e = js("head", expect_error=True, bucket=jbucket, key="cp/dst.bin")
    assert e["error"]["status"] == 404
    r = js("deleteMany", bucket=jbucket, keys=["cp/src name.bin", "cp/nothing"])
    assert sorted(r["Deleted"]) == ["cp/nothing", "cp/src name.bin"] and r["Errors"] == []
    assert js("list", bucket=jbucket, prefix="cp/")["keys"] == []
