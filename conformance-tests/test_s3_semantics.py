"""S3 semantics matrix (issue 2) against the real gateway, with hand-built SigV4 requests.

Every request here is built by ``nebula_helpers.RawS3`` so the test controls each header and byte
(malformed ranges, traversal keys, tampered signatures, aws-chunked bodies...).  Objects are
compared by sha256, errors by HTTP status *and* the S3 XML ``<Code>``.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import email.utils
import hashlib
import json
import os
import random
import re
import sqlite3
import stat
import subprocess
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from conftest import ACCESS_KEY, AWS_BIN, SECRET_KEY, gateway_bin, new_bucket_name, run, sanitized_environ
from nebula_helpers import (
    EMPTY_SHA256,
    MIB,
    STREAMING_SIGNED,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED,
    Creds,
    amz_now,
    aws_chunked_signed,
    aws_chunked_unsigned_trailer,
    b64,
    content_md5,
    crc32_b64,
    make_random_file,
    multipart_etag,
    object_path,
    parse_list,
    sha256_bytes,
    sha256_file,
    sign_headers,
    strip_ns,
    uri_encode,
)


def etag_of(data: bytes) -> str:
    return '"%s"' % hashlib.md5(data).hexdigest()


def http_date(t: dt.datetime) -> str:
    return email.utils.format_datetime(t.astimezone(dt.timezone.utc), usegmt=True)


def parse_http_date(s: str) -> dt.datetime:
    return email.utils.parsedate_to_datetime(s)


def assert_error(r, status: int, code: str | tuple[str, ...]):
    codes = (code,) if isinstance(code, str) else code
    assert r.status == status and r.code in codes, f"expected {status} {codes}, got {r.status} {r.code}: {r}"


def assert_client_error(r, what: str):
    """A 4xx with an S3 XML error body (HEAD has no body)."""
    assert 400 <= r.status < 500, f"{what}: expected a 4xx S3 error, got {r.status}: {r}"
    assert r.code, f"{what}: 4xx without an S3 XML <Code>: {r}"


# =============================================================================================
# harness self-check (no gateway needed)


def test_signer_matches_botocore():
    """The hand-written SigV4 used by this file signs exactly like botocore."""
    from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = Credentials(ACCESS_KEY, SECRET_KEY)
    path = object_path("bucket-x", "dir/a b+c~ü.txt")
    req = AWSRequest(
        method="GET",
        url="http://127.0.0.1:9000" + path + "?list-type=2&prefix=a%20b",
        headers={"x-amz-content-sha256": EMPTY_SHA256},
    )
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    when = dt.datetime.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    mine, _ = sign_headers(
        Creds(ACCESS_KEY, SECRET_KEY),
        "GET",
        path,
        [("list-type", "2"), ("prefix", "a b")],
        {"host": "127.0.0.1:9000"},
        EMPTY_SHA256,
        when,
    )
    assert mine["Authorization"] == req.headers["Authorization"]

    req = AWSRequest(method="GET", url="http://127.0.0.1:9000" + path)
    S3SigV4QueryAuth(creds, "s3", "us-east-1", expires=900).add_auth(req)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(req.url).query))
    when = dt.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    from nebula_helpers import presign

    url = presign(Creds(ACCESS_KEY, SECRET_KEY), "GET", "127.0.0.1:9000", path, 900, when)
    mq = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert mq["X-Amz-Signature"] == q["X-Amz-Signature"]


# =============================================================================================
# process, configuration, logging


def test_sigterm_graceful_shutdown(start_gateway):
    g = start_gateway()
    r = g.raw().request("GET", "/")
    assert r.status == 200, r
    t0 = time.monotonic()
    rc = g.stop()
    assert rc == 0, f"exit status {rc} after SIGTERM\n{g.log_tail()}"
    assert time.monotonic() - t0 < 10


def test_full_disk_is_507_insufficient_storage(start_gateway, tmp_path):
    """A data folder that really fills up (a 4 MiB tmpfs): the write that does not fit answers
    507 InsufficientStorage with an XML body, not a 500; what was stored stays readable; space
    freed by a delete is usable again (the failed write left nothing behind)."""
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", 'mount -t tmpfs -o size=1m t "$0"', str(tmp_path)],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(
            "this machine allows no unprivileged user and mount namespace to mount a small tmpfs "
            f"({probe.stderr.decode(errors='replace').strip()}); the mapping of ENOSPC is unit-tested "
            "in gateway/src/s3/error.rs"
        )
    # No free-space reserve (the default keeps 1 GiB free, more than this disk holds): this is
    # the disk itself refusing a write (ENOSPC); test_disk_full.py covers --min-free.
    g = start_gateway(data_tmpfs="4m", extra_args=["--min-free", "0"])
    raw = g.raw()
    b = new_bucket_name("full")
    assert raw.put_bucket(b).status == 200
    stored = {}
    refused = None
    for i in range(8):
        data = os.urandom(MIB)
        r = raw.put(b, f"fill/{i}", data)
        if r.status != 200:
            refused = r
            break
        stored[f"fill/{i}"] = data
    assert refused is not None, "8 MiB fitted on a 4 MiB tmpfs"
    assert stored, f"not even 1 MiB fitted: {refused}"
    assert_error(refused, 507, "InsufficientStorage")
    assert refused.header("content-type", "").startswith("application/xml"), refused
    assert refused.xml().findtext("Message") == "there is no space left in the gateway's data folder"
    for key, data in stored.items():
        r = raw.get(b, key)
        assert r.status == 200 and sha256_bytes(r.body) == sha256_bytes(data), key
    assert "the data folder is full" in g.log_text()
    first = next(iter(stored))
    assert raw.delete(b, first).status == 204
    data = os.urandom(MIB)
    assert raw.put(b, "after-delete", data).status == 200
    assert sha256_bytes(raw.get(b, "after-delete").body) == sha256_bytes(data)


def test_env_var_configuration(start_gateway):
    g = start_gateway(use_env=True)
    r = g.raw().request("GET", "/")
    assert r.status == 200, r
    name = new_bucket_name("env")
    assert g.raw().put_bucket(name).status == 200
    assert (g.data_dir / name).is_dir(), "bucket must be a directory under NEBULA_DATA_DIR"


def test_generated_credentials(start_gateway):
    """Without keys the gateway generates a pair in DIR/.nebula/credentials (0600) and prints them."""
    g = start_gateway(access_key=None, secret_key=None)
    cred = g.data_dir / ".nebula" / "credentials"
    assert cred.is_file(), f"{cred} missing; data dir has {list(g.data_dir.rglob('*'))}"
    mode = stat.S_IMODE(cred.stat().st_mode)
    assert mode == 0o600, f"credentials mode {oct(mode)}"
    text = cred.read_text()
    tokens = re.findall(r"[A-Za-z0-9/+=_\-]{16,}", text)
    log = g.log_text()
    assert g.hostport in log or f"http://{g.hostport}" in log, f"endpoint not printed:\n{g.log_tail()}"
    working = None
    for ak in tokens:
        for sk in tokens:
            if ak == sk:
                continue
            c = Creds(ak, sk)
            if g.raw(c).request("GET", "/").status == 200:
                working = c
                break
        if working:
            break
    assert working, f"no key pair from {cred} signs a working request; file:\n{text}"
    assert working.access_key in log, "generated access key not printed at start"
    # the credentials store is internal state: never a bucket, never served
    r = g.raw(working).request("GET", "/")
    assert b".nebula" not in r.body
    # a restart on the same data dir keeps the same keys
    assert g.stop() == 0
    from conftest import Gateway

    g2 = Gateway(g.workdir, access_key=None, secret_key=None)
    g2.start()
    try:
        assert g2.raw(working).request("GET", "/").status == 200, "generated keys changed across a restart"
    finally:
        assert g2.stop() == 0, g2.log_tail()


def test_request_log_lines(gw, raw, bucket):
    data = os.urandom(1000)
    assert raw.put(bucket, "logged/obj.bin", data).status == 200
    mark = gw.log_mark()
    r = raw.get(bucket, "logged/obj.bin", headers={"Range": "bytes=0-9"})
    assert r.status == 206
    r = raw.get(bucket, "logged/obj.bin")
    assert r.status == 200
    time.sleep(0.3)
    lines = gw.log_since(mark).splitlines()
    ranged = [l for l in lines if "method=GET" in l and f"path=/{bucket}/logged/obj.bin" in l and "range=bytes=0-9" in l and "status=206" in l]
    full = [l for l in lines if "method=GET" in l and f"path=/{bucket}/logged/obj.bin" in l and "range=-" in l and "status=200" in l]
    assert ranged, "no request log line with method=GET path=/bucket/key range=bytes=0-9 status=206:\n" + "\n".join(lines[-20:])
    assert full, "no request log line with range=- status=200:\n" + "\n".join(lines[-20:])


# =============================================================================================
# buckets


def test_bucket_lifecycle(gw, raw):
    name = new_bucket_name("life")
    r = raw.put_bucket(name)
    assert r.status == 200, r
    assert raw.request("HEAD", object_path(name)).status == 200
    r = raw.request("GET", "/")
    assert r.status == 200
    root = strip_ns(r.xml())
    names = [b.findtext("Name") for b in root.iter("Bucket")]
    assert name in names
    assert ".nebula" not in names
    assert root.find("Owner") is not None
    # us-east-1: creating a bucket you own again answers 200 (legacy AWS behaviour)
    r = raw.put_bucket(name)
    assert r.status == 200, r
    r = raw.request("GET", object_path(name), query=[("location", "")])
    assert r.status == 200, r
    loc = strip_ns(r.xml())
    assert loc.tag == "LocationConstraint" and (loc.text or "") in ("", "us-east-1"), r
    assert raw.put(name, "x", b"1").status == 200
    assert_error(raw.delete_bucket(name), 409, "BucketNotEmpty")
    assert raw.delete(name, "x").status == 204
    r = raw.delete_bucket(name)
    assert r.status == 204, r
    assert raw.request("HEAD", object_path(name)).status == 404
    assert_error(raw.delete_bucket(name), 404, "NoSuchBucket")
    assert_error(raw.get(name, "x"), 404, "NoSuchBucket")
    assert_error(raw.list_v2(name), 404, "NoSuchBucket")


def test_create_bucket_other_region_conflicts(start_gateway):
    g = start_gateway(region="eu-west-1")
    raw = g.raw()
    name = new_bucket_name("eu")
    body = (
        b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"
    )
    assert raw.put_bucket(name, body=body).status == 200
    assert_error(raw.put_bucket(name, body=body), 409, "BucketAlreadyOwnedByYou")
    r = raw.request("GET", object_path(name), query=[("location", "")])
    assert r.status == 200 and strip_ns(r.xml()).text == "eu-west-1", r


@pytest.mark.parametrize("name", ["ab", "Upper-Case", "-leading", "a" * 64, "bad_name", ".nebula"])
def test_invalid_bucket_names(raw, name):
    r = raw.request("PUT", "/" + uri_encode(name))
    assert_error(r, 400, "InvalidBucketName")


def test_canned_acl_headers_accepted(raw):
    name = new_bucket_name("acl")
    assert raw.put_bucket(name, headers={"x-amz-acl": "private"}).status == 200
    for acl in ("private", "bucket-owner-full-control", "public-read"):
        r = raw.put(name, f"acl-{acl}", b"data", headers={"x-amz-acl": acl})
        assert r.status == 200, f"x-amz-acl: {acl}: {r}"


# =============================================================================================
# objects and metadata


def test_object_crud(raw, bucket):
    data = os.urandom(123_457)
    r = raw.put(bucket, "crud/obj.bin", data)
    assert r.status == 200, r
    assert r.header("etag") == etag_of(data)
    r = raw.get(bucket, "crud/obj.bin")
    assert r.status == 200 and sha256_bytes(r.body) == sha256_bytes(data)
    assert r.header("etag") == etag_of(data)
    assert int(r.header("content-length")) == len(data)
    assert r.header("last-modified")
    r = raw.head(bucket, "crud/obj.bin")
    assert r.status == 200 and int(r.header("content-length")) == len(data) and r.body == b""
    # overwrite
    data2 = os.urandom(10)
    assert raw.put(bucket, "crud/obj.bin", data2).status == 200
    assert raw.get(bucket, "crud/obj.bin").body == data2
    assert raw.delete(bucket, "crud/obj.bin").status == 204
    assert_error(raw.get(bucket, "crud/obj.bin"), 404, "NoSuchKey")
    r = raw.head(bucket, "crud/obj.bin")
    assert r.status == 404 and r.body == b""
    # deleting a missing key is a success in S3
    assert raw.delete(bucket, "crud/never-existed").status == 204
    # empty object
    assert raw.put(bucket, "crud/empty", b"").status == 200
    r = raw.get(bucket, "crud/empty")
    assert r.status == 200 and r.body == b"" and r.header("etag") == etag_of(b"")


def test_metadata_round_trip(raw, bucket):
    hdrs = {
        "Content-Type": "application/x-nebula-test",
        "Content-Disposition": 'attachment; filename="report.pdf"',
        "Content-Encoding": "identity",
        "Content-Language": "fr-CA",
        "Cache-Control": "max-age=3600, public",
        "Expires": "Thu, 01 Dec 2044 16:00:00 GMT",
        "x-amz-meta-author": "Ada Lovelace",
        "x-amz-meta-project-id": "42",
    }
    assert raw.put(bucket, "meta/report.pdf", b"%PDF-1.4 test", headers=hdrs).status == 200
    for method in ("HEAD", "GET"):
        r = raw.request(method, object_path(bucket, "meta/report.pdf"))
        assert r.status == 200, r
        for k, v in hdrs.items():
            got = r.header(k.lower())
            if k == "Expires" and got:
                assert parse_http_date(got) == parse_http_date(v), f"{method} {k}: {got!r}"
            else:
                assert got == v, f"{method} {k}: expected {v!r}, got {got!r}"


def test_content_type_default(raw, bucket):
    assert raw.put(bucket, "ct/noext", b"x").status == 200
    r = raw.head(bucket, "ct/noext")
    assert r.header("content-type") in ("binary/octet-stream", "application/octet-stream"), r


def test_delete_objects(raw, bucket):
    keys = [f"multi/k{i}" for i in range(6)]
    for k in keys:
        assert raw.put(bucket, k, k.encode()).status == 200

    def body(ks, quiet):
        objs = "".join(f"<Object><Key>{k}</Key></Object>" for k in ks)
        q = "<Quiet>true</Quiet>" if quiet else ""
        return f'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{q}{objs}</Delete>'.encode()

    b = body(keys[:3] + ["multi/missing"], False)
    r = raw.request("POST", object_path(bucket), query=[("delete", "")], body=b, headers={"Content-MD5": content_md5(b)})
    assert r.status == 200, r
    root = strip_ns(r.xml())
    deleted = sorted(d.findtext("Key") for d in root.findall("Deleted"))
    assert deleted == sorted(keys[:3] + ["multi/missing"]), r
    assert not root.findall("Error")
    b = body(keys[3:], True)
    r = raw.request("POST", object_path(bucket), query=[("delete", "")], body=b, headers={"Content-MD5": content_md5(b)})
    assert r.status == 200, r
    root = strip_ns(r.xml())
    assert not root.findall("Deleted"), f"quiet mode must not list deleted keys: {r}"
    assert parse_list(raw.list_v2(bucket, prefix="multi/").body)["keys"] == []


# =============================================================================================
# copy


def test_copy_object_metadata_directives(raw, bucket):
    data = os.urandom(4096)
    src_h = {"Content-Type": "text/x-source", "x-amz-meta-origin": "src", "Cache-Control": "no-cache"}
    assert raw.put(bucket, "copy/src file.txt", data, headers=src_h).status == 200
    source = f"/{bucket}/" + uri_encode("copy/src file.txt", encode_slash=False)

    r = raw.put(bucket, "copy/dst-copy", b"", headers={"x-amz-copy-source": source})
    assert r.status == 200, r
    res = strip_ns(r.xml())
    assert res.tag == "CopyObjectResult" and res.findtext("ETag") == etag_of(data)
    h = raw.head(bucket, "copy/dst-copy")
    assert h.header("content-type") == "text/x-source" and h.header("x-amz-meta-origin") == "src"
    assert h.header("cache-control") == "no-cache"
    assert sha256_bytes(raw.get(bucket, "copy/dst-copy").body) == sha256_bytes(data)

    r = raw.put(
        bucket,
        "copy/dst-replace",
        b"",
        headers={
            "x-amz-copy-source": source,
            "x-amz-metadata-directive": "REPLACE",
            "Content-Type": "application/x-replaced",
            "x-amz-meta-new": "yes",
        },
    )
    assert r.status == 200, r
    h = raw.head(bucket, "copy/dst-replace")
    assert h.header("content-type") == "application/x-replaced"
    assert h.header("x-amz-meta-new") == "yes"
    assert h.header("x-amz-meta-origin") is None
    assert sha256_bytes(raw.get(bucket, "copy/dst-replace").body) == sha256_bytes(data)

    # copy onto itself with REPLACE updates metadata and keeps the bytes
    r = raw.put(
        bucket,
        "copy/src file.txt",
        b"",
        headers={"x-amz-copy-source": source, "x-amz-metadata-directive": "REPLACE", "x-amz-meta-v": "2"},
    )
    assert r.status == 200, r
    h = raw.head(bucket, "copy/src file.txt")
    assert h.header("x-amz-meta-v") == "2"
    assert sha256_bytes(raw.get(bucket, "copy/src file.txt").body) == sha256_bytes(data)

    assert_error(
        raw.put(bucket, "copy/x", b"", headers={"x-amz-copy-source": f"/{bucket}/copy/nope"}), 404, "NoSuchKey"
    )


def test_copy_source_conditionals(raw, bucket):
    data = b"conditional copy source"
    assert raw.put(bucket, "cc/src", data).status == 200
    lm = parse_http_date(raw.head(bucket, "cc/src").header("last-modified"))
    src = f"/{bucket}/cc/src"
    cases = [
        ({"x-amz-copy-source-if-match": etag_of(data)}, 200),
        ({"x-amz-copy-source-if-match": '"0123456789abcdef0123456789abcdef"'}, 412),
        ({"x-amz-copy-source-if-none-match": etag_of(data)}, 412),
        ({"x-amz-copy-source-if-none-match": '"0123456789abcdef0123456789abcdef"'}, 200),
        ({"x-amz-copy-source-if-unmodified-since": http_date(lm - dt.timedelta(days=1))}, 412),
        ({"x-amz-copy-source-if-unmodified-since": http_date(lm + dt.timedelta(days=1))}, 200),
        ({"x-amz-copy-source-if-modified-since": http_date(lm + dt.timedelta(days=1))}, 412),
        ({"x-amz-copy-source-if-modified-since": http_date(lm - dt.timedelta(days=1))}, 200),
    ]
    for i, (h, expected) in enumerate(cases):
        r = raw.put(bucket, f"cc/dst{i}", b"", headers={"x-amz-copy-source": src, **h})
        if expected == 200:
            assert r.status == 200, f"{h}: {r}"
            assert raw.get(bucket, f"cc/dst{i}").body == data
        else:
            assert_error(r, 412, "PreconditionFailed")
            assert raw.head(bucket, f"cc/dst{i}").status == 404, f"{h}: failed copy must not create the object"


# =============================================================================================
# ranges


@pytest.fixture(scope="module")
def range_obj(gw):
    raw = gw.raw()
    b = new_bucket_name("rng")
    assert raw.put_bucket(b).status == 200
    data = os.urandom(10_000)
    assert raw.put(b, "r/obj", data).status == 200
    assert raw.put(b, "r/empty", b"").status == 200
    return b, data


@pytest.mark.parametrize(
    "rng,start,end",
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-199", 100, 199),
        ("bytes=9990-", 9990, 9999),
        ("bytes=-7", 9993, 9999),
        ("bytes=5000-999999", 5000, 9999),
        ("bytes=0-0", 0, 0),
        ("bytes=9999-9999", 9999, 9999),
        ("bytes=-20000", 0, 9999),
    ],
)
def test_range_get(raw, range_obj, rng, start, end):
    b, data = range_obj
    r = raw.get(b, "r/obj", headers={"Range": rng})
    assert r.status == 206, f"{rng}: {r}"
    assert r.header("content-range") == f"bytes {start}-{end}/{len(data)}"
    assert int(r.header("content-length")) == end - start + 1
    assert r.body == data[start : end + 1]


@pytest.mark.parametrize("rng", ["bytes=10000-", "bytes=20000-20010", "bytes=-0"])
def test_range_not_satisfiable(raw, range_obj, rng):
    b, data = range_obj
    assert_error(raw.get(b, "r/obj", headers={"Range": rng}), 416, "InvalidRange")


@pytest.mark.parametrize("rng", ["bytes=abc", "bytes=0-1,4-5", "bytes=9-3", "items=0-5", "bytes="])
def test_range_malformed_returns_full_body(raw, range_obj, rng):
    """AWS ignores a Range it cannot parse (and multi-ranges) and answers 200 with the whole object."""
    b, data = range_obj
    r = raw.get(b, "r/obj", headers={"Range": rng})
    assert r.status == 200, f"Range: {rng}: {r}"
    assert sha256_bytes(r.body) == sha256_bytes(data)


@pytest.mark.parametrize("rng", ["bytes=-5", "bytes=0-", "bytes=0-10"])
def test_range_on_empty_object_is_not_a_server_error(raw, range_obj, rng):
    b, _ = range_obj
    r = raw.get(b, "r/empty", headers={"Range": rng})
    assert r.status in (200, 416), f"Range {rng} on an empty object: {r}"
    if r.status == 200:
        assert r.body == b""
    else:
        assert r.code == "InvalidRange"


# =============================================================================================
# conditionals


def test_conditional_get_and_head(raw, bucket):
    data = b"conditional data"
    assert raw.put(bucket, "cond/obj", data).status == 200
    etag = etag_of(data)
    lm = parse_http_date(raw.head(bucket, "cond/obj").header("last-modified"))
    before, after = http_date(lm - dt.timedelta(days=1)), http_date(lm + dt.timedelta(days=1))
    other = '"00000000000000000000000000000000"'
    cases = [
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": other}, 412),
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": other}, 200),
        ({"If-Modified-Since": before}, 200),
        ({"If-Modified-Since": http_date(lm)}, 304),
        ({"If-Unmodified-Since": before}, 412),
        ({"If-Unmodified-Since": after}, 200),
        # AWS-documented precedence
        ({"If-Match": etag, "If-Unmodified-Since": before}, 200),
        ({"If-None-Match": etag, "If-Modified-Since": before}, 304),
    ]
    for method in ("GET", "HEAD"):
        for h, expected in cases:
            r = raw.request(method, object_path(bucket, "cond/obj"), headers=h)
            assert r.status == expected, f"{method} {h}: expected {expected}, got {r}"
            if expected == 200 and method == "GET":
                assert r.body == data
            if expected == 304:
                assert r.body == b""
                assert r.header("etag") == etag, f"304 should carry the ETag: {r}"
            if expected == 412 and method == "GET":
                assert r.code == "PreconditionFailed", r


def test_put_if_none_match_star(raw, bucket):
    assert raw.put(bucket, "ifnm/new", b"first", headers={"If-None-Match": "*"}).status == 200
    r = raw.put(bucket, "ifnm/new", b"second", headers={"If-None-Match": "*"})
    assert_error(r, 412, "PreconditionFailed")
    assert raw.get(bucket, "ifnm/new").body == b"first"


# =============================================================================================
# multipart


def _create_mpu(raw, bucket, key, headers=None) -> str:
    r = raw.request("POST", object_path(bucket, key), query=[("uploads", "")], headers=headers)
    assert r.status == 200, r
    root = strip_ns(r.xml())
    assert root.findtext("Bucket") == bucket and root.findtext("Key") == key
    uid = root.findtext("UploadId")
    assert uid
    return uid


def _upload_part(raw, bucket, key, uid, n, data, headers=None):
    return raw.request(
        "PUT",
        object_path(bucket, key),
        query=[("partNumber", str(n)), ("uploadId", uid)],
        body=data,
        headers=headers,
    )


def _complete_body(parts: list[tuple[int, str]]) -> bytes:
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</CompleteMultipartUpload>'.encode()


def _complete(raw, bucket, key, uid, parts):
    return raw.request(
        "POST", object_path(bucket, key), query=[("uploadId", uid)], body=_complete_body(parts)
    )


def test_multipart_three_parts(raw, bucket):
    key = "mpu/three parts.bin"
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1 * MIB + 12345)]
    uid = _create_mpu(raw, bucket, key, headers={"Content-Type": "video/x-test", "x-amz-meta-kind": "mpu"})
    etags = []
    for n, p in enumerate(parts, 1):
        r = _upload_part(raw, bucket, key, uid, n, p)
        assert r.status == 200, r
        assert r.header("etag") == etag_of(p)
        etags.append(r.header("etag"))

    r = raw.request("GET", object_path(bucket, key), query=[("uploadId", uid)])
    assert r.status == 200, r
    root = strip_ns(r.xml())
    listed = [(int(p.findtext("PartNumber")), p.findtext("ETag"), int(p.findtext("Size"))) for p in root.findall("Part")]
    assert listed == [(n, etags[n - 1], len(parts[n - 1])) for n in (1, 2, 3)], r

    r = raw.request("GET", object_path(bucket), query=[("uploads", "")])
    assert r.status == 200, r
    ups = [(u.findtext("Key"), u.findtext("UploadId")) for u in strip_ns(r.xml()).findall("Upload")]
    assert (key, uid) in ups, r

    # in-progress parts are never visible as objects
    assert parse_list(raw.list_v2(bucket, prefix="mpu/").body)["keys"] == []

    r = _complete(raw, bucket, key, uid, list(zip((1, 2, 3), etags)))
    assert r.status == 200, r
    root = strip_ns(r.xml())
    assert root.tag == "CompleteMultipartUploadResult", r
    expected_etag = multipart_etag(parts)
    assert root.findtext("ETag") == expected_etag
    assert root.findtext("Key") == key and root.findtext("Bucket") == bucket

    whole = b"".join(parts)
    r = raw.get(bucket, key)
    assert r.status == 200 and sha256_bytes(r.body) == sha256_bytes(whole)
    assert r.header("etag") == expected_etag
    h = raw.head(bucket, key)
    assert int(h.header("content-length")) == len(whole)
    assert h.header("content-type") == "video/x-test" and h.header("x-amz-meta-kind") == "mpu"
    r = raw.get(bucket, key, headers={"Range": f"bytes={5 * MIB - 10}-{5 * MIB + 9}"})
    assert r.status == 206 and r.body == whole[5 * MIB - 10 : 5 * MIB + 10]

    r = raw.request("GET", object_path(bucket), query=[("uploads", "")])
    assert uid not in r.body.decode()
    assert_error(raw.request("GET", object_path(bucket, key), query=[("uploadId", uid)]), 404, "NoSuchUpload")
    assert parse_list(raw.list_v2(bucket, prefix="mpu/").body)["keys"] == [key]


def test_upload_part_copy_with_range(raw, bucket):
    src = os.urandom(11 * MIB)
    assert raw.put(bucket, "upc/source", src).status == 200
    key = "upc/assembled"
    uid = _create_mpu(raw, bucket, key)
    etags = []
    ranges = [(0, 5 * MIB - 1), (5 * MIB, 10 * MIB - 1)]
    for n, (a, z) in enumerate(ranges, 1):
        r = raw.request(
            "PUT",
            object_path(bucket, key),
            query=[("partNumber", str(n)), ("uploadId", uid)],
            headers={"x-amz-copy-source": f"/{bucket}/upc/source", "x-amz-copy-source-range": f"bytes={a}-{z}"},
        )
        assert r.status == 200, r
        res = strip_ns(r.xml())
        assert res.tag == "CopyPartResult", r
        assert res.findtext("ETag") == etag_of(src[a : z + 1])
        etags.append(res.findtext("ETag"))
    tail = os.urandom(777)
    r = _upload_part(raw, bucket, key, uid, 3, tail)
    assert r.status == 200
    etags.append(r.header("etag"))
    r = _complete(raw, bucket, key, uid, list(zip((1, 2, 3), etags)))
    assert r.status == 200, r
    expected = src[: 10 * MIB] + tail
    got = raw.get(bucket, key)
    assert sha256_bytes(got.body) == sha256_bytes(expected)
    assert strip_ns(r.xml()).findtext("ETag") == multipart_etag([src[: 5 * MIB], src[5 * MIB : 10 * MIB], tail])


def test_multipart_entity_too_small(raw, bucket):
    key = "mpu/small"
    uid = _create_mpu(raw, bucket, key)
    e1 = _upload_part(raw, bucket, key, uid, 1, os.urandom(1 * MIB)).header("etag")
    e2 = _upload_part(raw, bucket, key, uid, 2, os.urandom(1 * MIB)).header("etag")
    assert_error(_complete(raw, bucket, key, uid, [(1, e1), (2, e2)]), 400, "EntityTooSmall")
    assert raw.head(bucket, key).status == 404


def test_multipart_invalid_part_and_order(raw, bucket):
    key = "mpu/invalid"
    uid = _create_mpu(raw, bucket, key)
    # both parts ≥ 5 MiB so that only the order (not EntityTooSmall) can be wrong
    p1, p2 = os.urandom(5 * MIB), os.urandom(5 * MIB + 100)
    e1 = _upload_part(raw, bucket, key, uid, 1, p1).header("etag")
    e2 = _upload_part(raw, bucket, key, uid, 2, p2).header("etag")
    bogus = '"ffffffffffffffffffffffffffffffff"'
    assert_error(_complete(raw, bucket, key, uid, [(1, e1), (2, bogus)]), 400, "InvalidPart")
    assert_error(_complete(raw, bucket, key, uid, [(1, e1), (3, e2)]), 400, "InvalidPart")
    assert_error(_complete(raw, bucket, key, uid, [(2, e2), (1, e1)]), 400, "InvalidPartOrder")
    assert raw.head(bucket, key).status == 404
    # the upload is still usable after rejected completions
    r = _complete(raw, bucket, key, uid, [(1, e1), (2, e2)])
    assert r.status == 200, r
    assert sha256_bytes(raw.get(bucket, key).body) == sha256_bytes(p1 + p2)


def test_multipart_abort(raw, bucket):
    key = "mpu/aborted"
    uid = _create_mpu(raw, bucket, key)
    assert _upload_part(raw, bucket, key, uid, 1, os.urandom(1000)).status == 200
    r = raw.request("DELETE", object_path(bucket, key), query=[("uploadId", uid)])
    assert r.status == 204, r
    assert_error(_upload_part(raw, bucket, key, uid, 2, b"late"), 404, "NoSuchUpload")
    assert_error(raw.request("GET", object_path(bucket, key), query=[("uploadId", uid)]), 404, "NoSuchUpload")
    assert raw.head(bucket, key).status == 404
    r = raw.request("GET", object_path(bucket), query=[("uploads", "")])
    assert r.status == 200 and uid not in r.body.decode()
    assert_error(_complete(raw, bucket, key, uid, [(1, '"x"')]), 404, "NoSuchUpload")


def test_upload_part_bad_md5(raw, bucket):
    key = "mpu/badmd5"
    uid = _create_mpu(raw, bucket, key)
    r = _upload_part(raw, bucket, key, uid, 1, b"part data", headers={"Content-MD5": content_md5(b"other")})
    assert_error(r, 400, "BadDigest")


# =============================================================================================
# listing: 2,500 keys


def _utf8(k: str) -> bytes:
    return k.encode("utf-8")


def _make_listing_keys() -> list[str]:
    keys = [f"dir{i % 4}/sub{(i // 4) % 6}/f{i:05d}.txt" for i in range(2400)]
    keys += [f"top{j:03d}.txt" for j in range(60)]
    keys += [f"special/a b {n}.txt" for n in range(10)]
    keys += [f"special/ümlaut-é-{n}" for n in range(10)]
    keys += [f"special/plus+and&amp={n}" for n in range(10)]
    keys += [f"special/per%cent<{n}>" for n in range(10)]
    assert len(keys) == 2500 and len(set(keys)) == 2500
    return keys


@pytest.fixture(scope="module")
def listing(gw):
    raw = gw.raw()
    b = new_bucket_name("list")
    assert raw.put_bucket(b).status == 200
    keys = _make_listing_keys()

    def put(k):
        r = raw.put(b, k, _utf8(k))
        assert r.status == 200, f"{k}: {r}"

    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(put, keys))
    return b, sorted(keys, key=_utf8)


def _model(keys, prefix="", delimiter=None):
    entries, seen = [], set()
    for k in sorted(keys, key=_utf8):
        if not k.startswith(prefix):
            continue
        if delimiter:
            rest = k[len(prefix) :]
            i = rest.find(delimiter)
            if i >= 0:
                cp = prefix + rest[: i + len(delimiter)]
                if cp not in seen:
                    seen.add(cp)
                    entries.append(("P", cp))
                continue
        entries.append(("K", k))
    return entries


def _page_entries(page):
    # Keys and prefixes interleave in lexical order across pages; within a page S3 reports them
    # separately, so merge them by the UTF-8 order.
    ent = [("K", k) for k in page["keys"]] + [("P", p) for p in page["prefixes"]]
    return sorted(ent, key=lambda e: _utf8(e[1]))


def _walk_v2(raw, bucket, max_keys=None, **params):
    pages, token = [], None
    for _ in range(10_000):
        q = dict(params)
        if max_keys is not None:
            q["max_keys"] = max_keys
        if token:
            q["continuation_token"] = token
        r = raw.list_v2(bucket, **q)
        assert r.status == 200, r
        page = parse_list(r.body)
        pages.append(page)
        n = len(page["keys"]) + len(page["prefixes"])
        assert int(page["KeyCount"]) == n, f"KeyCount {page['KeyCount']} != {n}"
        if max_keys is not None:
            assert n <= max_keys
        if page["IsTruncated"] == "true":
            assert n > 0, "truncated page without entries"
            token = page["NextContinuationToken"]
            assert token, "truncated V2 page without NextContinuationToken"
        else:
            assert page["IsTruncated"] == "false"
            return pages
    raise AssertionError("pagination does not terminate")


def _walk_v1(raw, bucket, max_keys=None, **params):
    pages, marker = [], None
    for _ in range(10_000):
        q = dict(params)
        if max_keys is not None:
            q["max_keys"] = max_keys
        if marker:
            q["marker"] = marker
        r = raw.list_v1(bucket, **q)
        assert r.status == 200, r
        page = parse_list(r.body)
        pages.append(page)
        n = len(page["keys"]) + len(page["prefixes"])
        if max_keys is not None:
            assert n <= max_keys
        if page["IsTruncated"] == "true":
            assert n > 0
            if params.get("delimiter"):
                assert page["NextMarker"], "V1 with delimiter must return NextMarker when truncated"
            marker = page["NextMarker"] or page["keys"][-1]
        else:
            return pages
    raise AssertionError("pagination does not terminate")


def test_list_v2_default_page_of_1000(raw, listing):
    b, keys = listing
    pages = _walk_v2(raw, b)
    assert [len(p["keys"]) for p in pages] == [1000, 1000, 500]
    got = [k for p in pages for k in p["keys"]]
    assert got == keys
    c = pages[0]["contents"][0]
    assert c["Size"] == len(_utf8(c["Key"])) and c["ETag"] == etag_of(_utf8(c["Key"])) and c["LastModified"]


@pytest.mark.parametrize("max_keys", [1, 333, 999])
def test_list_v2_pagination(raw, listing, max_keys):
    b, keys = listing
    if max_keys == 1:
        pages = _walk_v2(raw, b, max_keys=1, prefix="dir2/sub3/")
        expected = _model(keys, "dir2/sub3/")
    else:
        pages = _walk_v2(raw, b, max_keys=max_keys)
        expected = _model(keys)
    got = [e for p in pages for e in _page_entries(p)]
    assert got == expected


@pytest.mark.parametrize(
    "prefix,max_keys",
    [("", 1000), ("", 3), ("dir1/", 4), ("dir1/", 1000), ("special/", 1000), ("dir3/sub5/", 50), ("nope/", 10)],
)
def test_list_v2_delimiter(raw, listing, prefix, max_keys):
    b, keys = listing
    pages = _walk_v2(raw, b, max_keys=max_keys, prefix=prefix, delimiter="/")
    got = [e for p in pages for e in _page_entries(p)]
    assert got == _model(keys, prefix, "/")
    assert pages[0]["Prefix"] == prefix and pages[0]["Delimiter"] == "/"
    seen = [e[1] for e in got]
    assert len(seen) == len(set(seen)), "an entry was returned on two pages"


def test_list_v2_start_after(raw, listing):
    b, keys = listing
    after = "dir1/sub3/f00100.txt"
    pages = _walk_v2(raw, b, max_keys=500, start_after=after)
    got = [k for p in pages for k in p["keys"]]
    assert got == [k for k in keys if _utf8(k) > _utf8(after)]
    assert pages[0]["StartAfter"] == after


@pytest.mark.parametrize("prefix,delimiter,max_keys", [("", None, 1000), ("", None, 777), ("", "/", 2), ("dir0/", "/", 3), ("dir0/sub1/", None, 100)])
def test_list_v1_marker_pagination(raw, listing, prefix, delimiter, max_keys):
    b, keys = listing
    params = {"prefix": prefix}
    if delimiter:
        params["delimiter"] = delimiter
    pages = _walk_v1(raw, b, max_keys=max_keys, **params)
    got = [e for p in pages for e in _page_entries(p)]
    assert got == _model(keys, prefix, delimiter)


def test_list_encoding_type_url(raw, listing):
    b, keys = listing
    special = [k for k in keys if k.startswith("special/")]
    for lister in (raw.list_v2, raw.list_v1):
        r = lister(b, prefix="special/", encoding_type="url")
        assert r.status == 200
        page = parse_list(r.body)
        assert page["EncodingType"] == "url"
        for k in page["keys"]:
            assert " " not in k and all(ord(c) < 128 for c in k), f"key not url-encoded: {k!r}"
        assert [urllib.parse.unquote_plus(k) for k in page["keys"]] == special
        r = lister(b, delimiter=" ", prefix="special/a", encoding_type="url")
        page = parse_list(r.body)
        assert [urllib.parse.unquote_plus(p) for p in page["prefixes"]] == ["special/a "]


def test_list_max_keys_zero_and_missing_bucket(raw, listing):
    b, _ = listing
    page = parse_list(raw.list_v2(b, max_keys=0).body)
    assert page["keys"] == [] and page["prefixes"] == []
    assert_error(raw.list_v2("no-such-bucket-" + os.urandom(4).hex()), 404, "NoSuchBucket")


# =============================================================================================
# out-of-band files (the data dir is a plain, transparent file tree)


def test_out_of_band_files_listed_and_served(gw, raw, bucket):
    root = gw.data_dir / bucket
    files = {
        "oob/readme.txt": b"hello from the filesystem\n",
        "oob/data.json": b'{"a": 1}',
        "oob/deep/nested/video.mp4": os.urandom(300_000),
        "oob/image.png": b"\x89PNG\r\n\x1a\n" + os.urandom(100),
    }
    for k, v in files.items():
        p = root / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(v)
    page = parse_list(raw.list_v2(bucket, prefix="oob/").body)
    assert page["keys"] == sorted(files, key=_utf8)
    for c in page["contents"]:
        assert c["Size"] == len(files[c["Key"]]) and c["ETag"], c
    expected_types = {
        "oob/readme.txt": "text/plain",
        "oob/data.json": "application/json",
        "oob/deep/nested/video.mp4": "video/mp4",
        "oob/image.png": "image/png",
    }
    for k, v in files.items():
        r = raw.get(bucket, k)
        assert r.status == 200 and sha256_bytes(r.body) == sha256_bytes(v), k
        assert r.header("etag"), k
        ct = (r.header("content-type") or "").split(";")[0]
        assert ct == expected_types[k], f"{k}: content-type {ct!r}"
    r = raw.get(bucket, "oob/deep/nested/video.mp4", headers={"Range": "bytes=1000-1999"})
    assert r.status == 206 and r.body == files["oob/deep/nested/video.mp4"][1000:2000]
    page = parse_list(raw.list_v2(bucket, prefix="oob/", delimiter="/").body)
    assert page["prefixes"] == ["oob/deep/"]


def test_out_of_band_modification_changes_etag(gw, raw, bucket):
    v1 = b"version one"
    assert raw.put(bucket, "oobmod/file.txt", v1).status == 200
    old = raw.head(bucket, "oobmod/file.txt").header("etag")
    time.sleep(1.1)
    v2 = b"version two, longer, written by another program"
    (gw.data_dir / bucket / "oobmod" / "file.txt").write_bytes(v2)
    r = raw.get(bucket, "oobmod/file.txt")
    assert r.status == 200 and r.body == v2
    assert int(r.header("content-length")) == len(v2)
    assert r.header("etag") != old, "ETag still describes the old content after an out-of-band change"
    r = raw.get(bucket, "oobmod/file.txt", headers={"If-None-Match": old})
    assert r.status == 200 and r.body == v2


def test_out_of_band_bucket_directory(gw, raw):
    name = new_bucket_name("oobb")
    (gw.data_dir / name / "sub").mkdir(parents=True)
    (gw.data_dir / name / "sub" / "f.txt").write_bytes(b"out of band bucket")
    r = raw.request("GET", "/")
    names = [b.findtext("Name") for b in strip_ns(r.xml()).iter("Bucket")]
    assert name in names
    assert raw.get(name, "sub/f.txt").body == b"out of band bucket"


def test_internal_state_is_never_exposed(gw, raw, bucket):
    # put something that creates internal state, then make sure none of it is reachable
    uid = _create_mpu(raw, bucket, "internal/mpu")
    assert _upload_part(raw, bucket, "internal/mpu", uid, 1, b"x" * 1000).status == 200
    assert raw.put(bucket, "internal/meta", b"m", headers={"x-amz-meta-a": "b"}).status == 200
    names = [b.findtext("Name") for b in strip_ns(raw.request("GET", "/").xml()).iter("Bucket")]
    assert not any(n.startswith(".") for n in names), names
    page = parse_list(raw.list_v2(bucket).body)
    assert page["keys"] == ["internal/meta"], page["keys"]
    for path in ("/.nebula", "/.nebula/credentials", "/.nebula/", f"/{bucket}/../.nebula/credentials"):
        r = raw.request("GET", path)
        assert r.status >= 400 and r.status < 500, f"GET {path}: {r}"


# =============================================================================================
# hostile keys


def _no_escape(gw, marker: str):
    hits = list(gw.workdir.glob(f"**/*{marker}*")) + list(gw.workdir.parent.glob(f"*{marker}*"))
    assert not hits, f"file created outside its bucket: {hits}"


@pytest.mark.parametrize(
    "path_tpl",
    [
        "/{b}/../{m}",
        "/{b}/a/../../{m}",
        "/{b}/%2E%2E/{m}",
        "/{b}/..%2F{m}",
        "/{b}/a/%2e%2e/%2e%2e/{m}",
        "/{b}/..",
        "/{b}/a/..",
    ],
)
def test_traversal_keys_rejected(gw, raw, bucket, path_tpl):
    marker = "escape-" + os.urandom(4).hex()
    path = path_tpl.format(b=bucket, m=marker)
    r = raw.request("PUT", path, body=b"should not be written")
    assert_client_error(r, f"PUT {path}")
    _no_escape(gw, marker)
    r = raw.request("GET", path)
    assert_client_error(r, f"GET {path}")


@pytest.mark.parametrize("key", ["./dot", "a/./b", "a/.", "."])
def test_dot_segment_keys_not_aliased(raw, bucket, key):
    """`.` segments: either rejected with an S3 error, or stored under exactly that key (never
    silently aliased to the normalised path)."""
    path = f"/{bucket}/{key}"
    r = raw.request("PUT", path, body=b"dot")
    if r.status == 200:
        keys = parse_list(raw.list_v2(bucket).body)["keys"]
        assert keys == [key], f"PUT {key!r} stored as {keys}"
        assert raw.request("GET", path).body == b"dot"
    else:
        assert_client_error(r, f"PUT {path}")
        assert parse_list(raw.list_v2(bucket).body)["keys"] == []


@pytest.mark.parametrize(
    "path", ["/{b}/../../../../../../etc/hostname", "/{b}/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fhostname", "/{b}/..%2F..%2F..%2F..%2F..%2Fetc/passwd"]
)
def test_traversal_reads_rejected(raw, bucket, path):
    r = raw.request("GET", path.format(b=bucket))
    assert_client_error(r, path)
    assert b"root:" not in r.body


@pytest.mark.parametrize("key", ["a//b", "//lead", "x/%00y", "nul%00"])
def test_empty_segment_and_nul_keys_rejected(gw, raw, bucket, key):
    path = f"/{bucket}/{key}"
    r = raw.request("PUT", path, body=b"x")
    assert_client_error(r, f"PUT {path}")
    r = raw.request("GET", path)
    assert_client_error(r, f"GET {path}")


def test_key_length_limits(raw, bucket):
    ok = "/".join(["k" * 200] * 5) + "/" + "z" * 19
    assert len(_utf8(ok)) == 1024
    r = raw.put(bucket, ok, b"long key")
    assert r.status == 200, r
    assert raw.get(bucket, ok).body == b"long key"
    too_long = ok + "x"
    assert_error(raw.put(bucket, too_long, b"x"), 400, "KeyTooLongError")
    # a single path segment longer than the filesystem's NAME_MAX: an S3 error, never a 500
    r = raw.put(bucket, "seg/" + "s" * 300, b"x")
    assert_client_error(r, "300-byte segment")


# =============================================================================================
# a key and a folder of the same name, and folder markers


def test_key_under_existing_object(gw, raw, bucket):
    """`a` then `a/b`: the file `a` becomes a folder holding it, and both are objects."""
    assert raw.put(bucket, "col1/c", b"file c").status == 200
    assert (gw.data_dir / bucket / "col1/c").is_file(), "the common case is the plain file"
    r = raw.put(bucket, "col1/c/d", b"under a file")
    assert r.status == 200, r
    assert raw.get(bucket, "col1/c").body == b"file c"
    assert raw.get(bucket, "col1/c/d").body == b"under a file"
    r = raw.put(bucket, "col1/c/d/e/f", b"deeper")
    assert r.status == 200, r
    assert raw.get(bucket, "col1/c/d").body == b"under a file"
    assert raw.get(bucket, "col1/c/d/e/f").body == b"deeper"
    h = raw.head(bucket, "col1/c")
    assert h.status == 200 and h.header("etag") == etag_of(b"file c"), h
    # on disk: each object that shares its name with a folder is a hidden file inside it
    root = gw.data_dir / bucket / "col1"
    assert (root / "c/.nebula-object").read_bytes() == b"file c"
    assert (root / "c/d/.nebula-object").read_bytes() == b"under a file"
    assert (root / "c/d/e/f").read_bytes() == b"deeper"
    keys = parse_list(raw.list_v2(bucket, prefix="col1/").body)["keys"]
    assert keys == ["col1/c", "col1/c/d", "col1/c/d/e/f"]


def test_object_over_existing_prefix(gw, raw, bucket):
    """`a/b` then `a`: PUT, copy and multipart complete onto a folder's name all make the object."""
    assert raw.put(bucket, "col2/a/b", b"file b").status == 200
    assert_error(raw.get(bucket, "col2/a"), 404, "NoSuchKey")
    r = raw.head(bucket, "col2/a")
    assert r.status == 404, f"HEAD of a folder that holds no object of its name must be 404: {r}"
    r = raw.put(bucket, "col2/a", b"over a folder")
    assert r.status == 200, r
    assert raw.get(bucket, "col2/a/b").body == b"file b"
    assert raw.get(bucket, "col2/a").body == b"over a folder"
    assert (gw.data_dir / bucket / "col2/a/.nebula-object").read_bytes() == b"over a folder"
    # copy onto it, then multipart complete onto it
    r = raw.put(bucket, "col2/a", b"", headers={"x-amz-copy-source": f"/{bucket}/col2/a/b"})
    assert r.status == 200 and r.code is None, r
    assert raw.get(bucket, "col2/a").body == b"file b"
    uid = _create_mpu(raw, bucket, "col2/a")
    e = _upload_part(raw, bucket, "col2/a", uid, 1, b"tiny").header("etag")
    r = _complete(raw, bucket, "col2/a", uid, [(1, e)])
    assert r.status == 200 and r.code is None, f"CompleteMultipartUpload onto a folder's name: {r}"
    assert raw.get(bucket, "col2/a").body == b"tiny"
    assert raw.get(bucket, "col2/a/b").body == b"file b"
    # If-None-Match: * sees the object in its folder
    assert_error(raw.put(bucket, "col2/a", b"x", headers={"If-None-Match": "*"}), 412, "PreconditionFailed")
    # S3's byte order: `a` < `a!x` < `a/b`, with and without a delimiter, in both list versions
    assert raw.put(bucket, "col2/a!x", b"bang").status == 200
    for ls in (raw.list_v1, raw.list_v2):
        page = parse_list(ls(bucket, prefix="col2/").body)
        assert page["keys"] == ["col2/a", "col2/a!x", "col2/a/b"], page
        sizes = {c["Key"]: c["Size"] for c in page["contents"]}
        assert sizes == {"col2/a": 4, "col2/a!x": 4, "col2/a/b": 6}
        page = parse_list(ls(bucket, prefix="col2/", delimiter="/").body)
        assert (page["keys"], page["prefixes"]) == (["col2/a", "col2/a!x"], ["col2/a/"]), page
        page = parse_list(ls(bucket, prefix="col2/a/", delimiter="/").body)
        assert (page["keys"], page["prefixes"]) == (["col2/a/b"], []), page
    # pages of one key each walk the same order
    seen, token = [], None
    while True:
        params = {"prefix": "col2/", "max-keys": "1"}
        if token:
            params["continuation-token"] = token
        page = parse_list(raw.list_v2(bucket, **params).body)
        seen += page["keys"]
        if page["IsTruncated"] != "true":
            break
        token = page["NextContinuationToken"]
    assert seen == ["col2/a", "col2/a!x", "col2/a/b"]
    page = parse_list(raw.list_v2(bucket, prefix="col2/", **{"start-after": "col2/a"}).body)
    assert page["keys"] == ["col2/a!x", "col2/a/b"]
    # deleting one leaves the other, in either order
    assert raw.delete(bucket, "col2/a/b").status == 204
    assert raw.get(bucket, "col2/a").body == b"tiny"
    assert parse_list(raw.list_v2(bucket, prefix="col2/").body)["keys"] == ["col2/a", "col2/a!x"]
    assert raw.put(bucket, "col2/a/b", b"file b").status == 200
    assert raw.delete(bucket, "col2/a").status == 204
    assert_error(raw.get(bucket, "col2/a"), 404, "NoSuchKey")
    assert raw.get(bucket, "col2/a/b").body == b"file b"
    assert parse_list(raw.list_v2(bucket, prefix="col2/").body)["keys"] == ["col2/a!x", "col2/a/b"]


def test_reserved_names_are_not_keys(gw, raw, bucket):
    for key in ("x/.nebula-object", ".nebula-object", "x/.nebula-folder/y", ".nebula-tmp/z"):
        assert_error(raw.put(bucket, key, b"x"), 400, "InvalidArgument")
    # a hidden file dropped by hand under the reserved name is the object of its folder's name
    (gw.data_dir / bucket / "byhand").mkdir()
    (gw.data_dir / bucket / "byhand" / ".nebula-object").write_bytes(b"by hand")
    (gw.data_dir / bucket / "byhand" / "inner").write_bytes(b"inner")
    assert raw.get(bucket, "byhand").body == b"by hand"
    assert parse_list(raw.list_v2(bucket).body)["keys"] == ["byhand", "byhand/inner"]


def test_folder_marker_with_bytes(gw, raw, bucket):
    r = raw.put(bucket, "fm/", b"marker bytes", headers={"content-type": "text/plain"})
    assert r.status == 200 and r.header("etag") == etag_of(b"marker bytes"), r
    assert (gw.data_dir / bucket / "fm/.nebula-folder").read_bytes() == b"marker bytes"
    assert raw.put(bucket, "fm/in", b"inside").status == 200
    g = raw.get(bucket, "fm/")
    assert g.body == b"marker bytes" and g.header("content-type") == "text/plain", g
    h = raw.head(bucket, "fm/")
    assert int(h.header("content-length")) == 12, h
    page = parse_list(raw.list_v2(bucket, prefix="fm").body)
    assert [(c["Key"], c["Size"]) for c in page["contents"]] == [("fm/", 12), ("fm/in", 6)]
    # a marker over a file: the file becomes the object inside the folder
    assert raw.put(bucket, "fm2", b"file").status == 200
    assert raw.put(bucket, "fm2/", b"marker").status == 200
    assert raw.get(bucket, "fm2").body == b"file" and raw.get(bucket, "fm2/").body == b"marker"
    assert parse_list(raw.list_v2(bucket, prefix="fm2").body)["keys"] == ["fm2", "fm2/"]
    # copies between markers and keys carry the bytes
    r = raw.put(bucket, "fm3/", b"", headers={"x-amz-copy-source": f"/{bucket}/fm2"})
    assert r.status == 200, r
    assert raw.get(bucket, "fm3/").body == b"file"
    # emptied again, it is the plain folder; deleted, its contents stay
    assert raw.put(bucket, "fm/", b"").status == 200
    assert not (gw.data_dir / bucket / "fm/.nebula-folder").exists()
    assert raw.get(bucket, "fm/").body == b""
    assert raw.put(bucket, "fm/", b"again").status == 200
    assert raw.delete(bucket, "fm/").status == 204
    assert_error(raw.get(bucket, "fm/"), 404, "NoSuchKey")
    assert raw.get(bucket, "fm/in").body == b"inside"


def test_keys_ending_in_slash(raw, bucket):
    r = raw.put(bucket, "folder/", b"")
    assert r.status == 200, r
    h = raw.head(bucket, "folder/")
    assert h.status == 200 and int(h.header("content-length")) == 0, h
    assert raw.put(bucket, "folder/inner.txt", b"inner").status == 200
    assert parse_list(raw.list_v2(bucket, prefix="folder").body)["keys"] == ["folder/", "folder/inner.txt"]
    page = parse_list(raw.list_v2(bucket, prefix="folder/", delimiter="/").body)
    assert page["keys"] == ["folder/", "folder/inner.txt"]
    r = raw.get(bucket, "folder/")
    assert r.status == 200 and r.body == b""
    assert raw.delete(bucket, "folder/").status == 204
    assert parse_list(raw.list_v2(bucket, prefix="folder").body)["keys"] == ["folder/inner.txt"]
    assert raw.get(bucket, "folder/inner.txt").body == b"inner"
    # a marker for a folder that already has content, then a nested marker
    assert raw.put(bucket, "folder/", b"").status == 200
    assert raw.put(bucket, "folder/sub/", b"").status == 200
    keys = parse_list(raw.list_v2(bucket, prefix="folder").body)["keys"]
    assert keys == ["folder/", "folder/inner.txt", "folder/sub/"]


def test_key_and_folder_coexist_with_real_clients(start_gateway, tmp_path):
    """boto3 and the aws CLI write `a` and `a/b` in both orders and a folder marker with bytes;
    all of it is on disk as the layout says, lists in S3's order, survives a lost catalog
    (`reindex`) and a restart, and deleting one object leaves the other."""
    g = start_gateway()
    s3 = g.boto3_client()
    b = new_bucket_name("coexist")
    s3.create_bucket(Bucket=b)
    env = g.client_env()

    def aws(*args):
        return run([AWS_BIN, "--endpoint-url", g.endpoint, "--no-cli-pager", *map(str, args)], env=env)

    # boto3: the file first, then a key below it
    s3.put_object(Bucket=b, Key="a", Body=b"file a", ContentType="text/x-a", Metadata={"who": "boto3"})
    s3.put_object(Bucket=b, Key="a/b", Body=b"below a")
    s3.put_object(Bucket=b, Key="a!x", Body=b"bang")
    # the aws CLI: the folder first, then the file of its name, and a folder marker with bytes
    body = tmp_path / "body"
    for key, data in (("d/e", b"below d"), ("d", b"file d"), ("dir/", b"marker bytes"), ("dir/f", b"in dir")):
        body.write_bytes(data)
        aws("s3api", "put-object", "--bucket", b, "--key", key, "--body", body)
    expected = {
        "a": b"file a",
        "a!x": b"bang",
        "a/b": b"below a",
        "d": b"file d",
        "d/e": b"below d",
        "dir/": b"marker bytes",
        "dir/f": b"in dir",
    }
    data = g.data_dir / b
    assert (data / "a/.nebula-object").read_bytes() == b"file a"
    assert (data / "a/b").read_bytes() == b"below a"
    assert (data / "a!x").read_bytes() == b"bang", "an object that shares no name stays a plain file"
    assert (data / "d/.nebula-object").read_bytes() == b"file d"
    assert (data / "dir/.nebula-folder").read_bytes() == b"marker bytes"
    assert (data / "dir/f").read_bytes() == b"in dir"

    def check():
        for key, want in expected.items():
            assert s3.get_object(Bucket=b, Key=key)["Body"].read() == want, key
        h = s3.head_object(Bucket=b, Key="a")
        assert (h["ContentType"], h["Metadata"]) == ("text/x-a", {"who": "boto3"}), "metadata moved with the file"
        for ls in (s3.list_objects_v2, s3.list_objects):
            got = ls(Bucket=b)["Contents"]
            assert [(o["Key"], o["Size"]) for o in got] == [(k, len(v)) for k, v in sorted(expected.items())]
            page = ls(Bucket=b, Delimiter="/")
            assert [o["Key"] for o in page["Contents"]] == ["a", "a!x", "d"]
            assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/", "d/", "dir/"]
            page = ls(Bucket=b, Prefix="dir/", Delimiter="/")
            assert [o["Key"] for o in page["Contents"]] == ["dir/", "dir/f"]
        listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", b, "--output", "json").stdout_text)
        assert [o["Key"] for o in listed["Contents"]] == sorted(expected)
        out = tmp_path / "out"
        aws("s3", "cp", f"s3://{b}/d", out)
        assert out.read_bytes() == b"file d"

    check()
    # tagging reaches the object in its folder
    s3.put_object_tagging(Bucket=b, Key="a", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert s3.get_object_tagging(Bucket=b, Key="a")["TagSet"] == [{"Key": "k", "Value": "v"}]

    # the catalog is lost and rebuilt from the folder, then the gateway starts again
    g.stop()
    for suffix in ("", "-wal", "-shm"):
        (g.data_dir / ".nebula" / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    cmd = [str(gateway_bin()), "reindex", "--data-dir", str(g.data_dir)]
    p = subprocess.run(cmd, capture_output=True, timeout=120, env=sanitized_environ())
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    con = sqlite3.connect(g.data_dir / ".nebula" / "catalog.sqlite")
    try:
        rows = dict(con.execute("SELECT key, size FROM objects WHERE bucket = ?", (b,)).fetchall())
    finally:
        con.close()
    assert rows == {k: len(v) for k, v in expected.items()}
    g.start()
    check()
    assert s3.get_object_tagging(Bucket=b, Key="a")["TagSet"] == [{"Key": "k", "Value": "v"}]

    # deleting one leaves the other
    s3.delete_object(Bucket=b, Key="a/b")
    s3.delete_object(Bucket=b, Key="d")
    s3.delete_object(Bucket=b, Key="dir/")
    assert s3.get_object(Bucket=b, Key="a")["Body"].read() == b"file a"
    assert s3.get_object(Bucket=b, Key="d/e")["Body"].read() == b"below d"
    assert s3.get_object(Bucket=b, Key="dir/f")["Body"].read() == b"in dir"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]]
    assert keys == ["a", "a!x", "d/e", "dir/f"]
    assert not (data / "d/.nebula-object").exists() and not (data / "dir/.nebula-folder").exists()


def test_versions_of_a_key_that_is_also_a_folder(start_gateway):
    g = start_gateway()
    s3 = g.boto3_client()
    b = new_bucket_name("coexistv")
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=b, Key="v", Body=b"one")["VersionId"]
    s3.put_object(Bucket=b, Key="v/w", Body=b"below")
    v2 = s3.put_object(Bucket=b, Key="v", Body=b"two")["VersionId"]
    assert (g.data_dir / b / "v/.nebula-object").read_bytes() == b"two"
    vs = s3.list_object_versions(Bucket=b)["Versions"]
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in vs if v["Key"] == "v"] == [("v", v2, True), ("v", v1, False)]
    assert [v["Key"] for v in vs] == ["v", "v", "v/w"]
    assert s3.get_object(Bucket=b, Key="v", VersionId=v1)["Body"].read() == b"one"
    marker = s3.delete_object(Bucket=b, Key="v")
    assert marker["DeleteMarker"] is True
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=b, Key="v")
    assert s3.get_object(Bucket=b, Key="v/w")["Body"].read() == b"below"
    s3.delete_object(Bucket=b, Key="v", VersionId=marker["VersionId"])
    assert s3.get_object(Bucket=b, Key="v")["Body"].read() == b"two"
    assert (g.data_dir / b / "v/.nebula-object").read_bytes() == b"two"
    # a copy of an old version onto the key makes a new current version in the folder
    s3.copy_object(Bucket=b, Key="v", CopySource={"Bucket": b, "Key": "v", "VersionId": v1})
    assert s3.get_object(Bucket=b, Key="v")["Body"].read() == b"one"
    assert len([v for v in s3.list_object_versions(Bucket=b, Prefix="v")["Versions"] if v["Key"] == "v"]) == 3


# =============================================================================================
# checksums and digests


def test_content_md5(raw, bucket):
    v1 = b"original content"
    r = raw.put(bucket, "md5/obj", v1, headers={"Content-MD5": content_md5(v1)})
    assert r.status == 200 and r.header("etag") == etag_of(v1), r
    v2 = b"replacement content"
    assert_error(raw.put(bucket, "md5/obj", v2, headers={"Content-MD5": content_md5(b"not v2")}), 400, "BadDigest")
    r = raw.get(bucket, "md5/obj")
    assert r.body == v1 and r.header("etag") == etag_of(v1), "a PUT rejected with BadDigest must not change the object"
    for bad in ("not base64!!", "AAAA", b64(b"x" * 17)):
        assert_error(raw.put(bucket, "md5/obj", v2, headers={"Content-MD5": bad}), 400, "InvalidDigest")
    assert raw.get(bucket, "md5/obj").body == v1
    assert_error(raw.put(bucket, "md5/new", v2, headers={"Content-MD5": content_md5(b"x")}), 400, "BadDigest")
    assert raw.head(bucket, "md5/new").status == 404


@pytest.mark.parametrize(
    "algo,fn",
    [
        ("crc32", crc32_b64),
        ("sha256", lambda d: b64(hashlib.sha256(d).digest())),
        ("sha1", lambda d: b64(hashlib.sha1(d).digest())),
    ],
)
def test_checksum_headers(raw, bucket, algo, fn):
    data = os.urandom(50_000)
    key = f"cks/{algo}"
    r = raw.put(bucket, key, data, headers={f"x-amz-checksum-{algo}": fn(data)})
    assert r.status == 200, r
    assert sha256_bytes(raw.get(bucket, key).body) == sha256_bytes(data)
    r = raw.put(bucket, key, b"tampered", headers={f"x-amz-checksum-{algo}": fn(b"something else")})
    assert_error(r, 400, "BadDigest")
    assert sha256_bytes(raw.get(bucket, key).body) == sha256_bytes(data), "rejected PUT changed the object"


def test_payload_sha256_mismatch(raw, bucket):
    r = raw.put(bucket, "sha/obj", b"actual body", payload_hash=hashlib.sha256(b"other body").hexdigest())
    assert_error(r, 400, "XAmzContentSHA256Mismatch")
    assert raw.head(bucket, "sha/obj").status == 404


def test_unsigned_payload_put(raw, bucket):
    data = os.urandom(70_000)
    r = raw.put(bucket, "unsigned/obj", data, payload_hash=UNSIGNED)
    assert r.status == 200, r
    assert sha256_bytes(raw.get(bucket, "unsigned/obj").body) == sha256_bytes(data)


def _chunked_put(raw, bucket, key, data, chunk, corrupt=None, extra=None):
    when = amz_now()
    path = object_path(bucket, key)
    body_len = None
    headers = {
        "host": raw.host_header,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
    }
    headers.update(extra or {})
    # the encoded length does not depend on the signatures' values
    probe = aws_chunked_signed(raw.creds, data, chunk, "0" * 64, when)
    body_len = len(probe)
    headers["content-length"] = str(body_len)
    headers, seed = sign_headers(raw.creds, "PUT", path, [], headers, STREAMING_SIGNED, when)
    body = aws_chunked_signed(raw.creds, data, chunk, seed, when, corrupt_chunk=corrupt)
    assert len(body) == body_len
    return raw.send("PUT", path, headers, body)


def test_aws_chunked_signed_put(raw, bucket):
    data = os.urandom(200_000)
    r = _chunked_put(raw, bucket, "chunked/signed", data, 64 * 1024)
    assert r.status == 200, r
    assert r.header("etag") == etag_of(data)
    got = raw.get(bucket, "chunked/signed")
    assert sha256_bytes(got.body) == sha256_bytes(data)
    h = raw.head(bucket, "chunked/signed")
    assert h.header("content-encoding") in (None, ""), "aws-chunked must not be stored as Content-Encoding"


def test_aws_chunked_bad_chunk_signature(raw, bucket):
    data = os.urandom(200_000)
    r = _chunked_put(raw, bucket, "chunked/bad", data, 64 * 1024, corrupt=1)
    assert_error(r, 403, "SignatureDoesNotMatch")
    assert raw.head(bucket, "chunked/bad").status == 404, "object with a bad chunk signature was stored"


def _trailer_put(raw, bucket, key, data, trailer_value, chunk=65536):
    body = aws_chunked_unsigned_trailer(data, chunk, "x-amz-checksum-crc32", trailer_value)
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }
    return raw.put(bucket, key, body, headers=headers, payload_hash=STREAMING_UNSIGNED_TRAILER)


def test_aws_chunked_unsigned_trailer_put(raw, bucket):
    data = os.urandom(150_001)
    r = _trailer_put(raw, bucket, "trailer/ok", data, crc32_b64(data))
    assert r.status == 200, r
    assert sha256_bytes(raw.get(bucket, "trailer/ok").body) == sha256_bytes(data)
    assert raw.head(bucket, "trailer/ok").header("content-length") == str(len(data))


def test_aws_chunked_unsigned_trailer_bad_checksum(raw, bucket):
    data = os.urandom(150_001)
    r = _trailer_put(raw, bucket, "trailer/bad", data, crc32_b64(b"different"))
    assert_error(r, 400, "BadDigest")
    assert raw.head(bucket, "trailer/bad").status == 404


# =============================================================================================
# authentication


def test_auth_errors(gw, raw, bucket):
    assert raw.put(bucket, "auth/obj", b"secret").status == 200
    path = object_path(bucket, "auth/obj")
    assert_error(raw.request("GET", path, sign=False), 403, "AccessDenied")
    assert_error(raw.request("GET", "/", sign=False), 403, "AccessDenied")
    assert_error(raw.request("PUT", path, sign=False, body=b"anon"), 403, "AccessDenied")
    unknown = raw.with_creds(Creds("NEBULAUNKNOWNKEY0000", SECRET_KEY))
    assert_error(unknown.request("GET", path), 403, "InvalidAccessKeyId")
    wrong = raw.with_creds(Creds(ACCESS_KEY, "wrong-secret-key-0000000000000000000000"))
    assert_error(wrong.request("GET", path), 403, "SignatureDoesNotMatch")
    # a signed header changed after signing
    headers, _ = sign_headers(raw.creds, "GET", path, [], {"host": raw.host_header, "range": "bytes=0-1"}, EMPTY_SHA256)
    headers["range"] = "bytes=0-2"
    assert_error(raw.send("GET", path, headers), 403, "SignatureDoesNotMatch")
    skewed = amz_now() - dt.timedelta(hours=1)
    assert_error(raw.request("GET", path, when=skewed), 403, "RequestTimeTooSkewed")
    assert raw.get(bucket, "auth/obj").body == b"secret"


def test_presigned_auth(gw, raw, bucket):
    assert raw.put(bucket, "pre/obj", b"presigned body").status == 200
    path = object_path(bucket, "pre/obj")
    url = raw.presigned_url("GET", path, 300)
    target = url[len(raw.endpoint) :]
    r = raw.send("GET", target, {"host": raw.host_header})
    assert r.status == 200 and r.body == b"presigned body", r

    old = amz_now() - dt.timedelta(hours=2)
    expired = raw.presigned_url("GET", path, 60, when=old)[len(raw.endpoint) :]
    assert_error(raw.send("GET", expired, {"host": raw.host_header}), 403, "AccessDenied")

    # one character changed in the query string
    sig_at = target.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    c = target[sig_at]
    tampered = target[:sig_at] + ("a" if c != "a" else "b") + target[sig_at + 1 :]
    assert_error(raw.send("GET", tampered, {"host": raw.host_header}), 403, "SignatureDoesNotMatch")
    tampered = target.replace("X-Amz-Expires=300", "X-Amz-Expires=301")
    assert_error(raw.send("GET", tampered, {"host": raw.host_header}), 403, "SignatureDoesNotMatch")
    other_key = target.replace("pre/obj", "pre/obk")
    assert raw.put(bucket, "pre/obk", b"other").status == 200
    assert_error(raw.send("GET", other_key, {"host": raw.host_header}), 403, "SignatureDoesNotMatch")

    week = raw.presigned_url("GET", path, 604800)[len(raw.endpoint) :]
    assert raw.send("GET", week, {"host": raw.host_header}).status == 200
    too_long = raw.presigned_url("GET", path, 604801)[len(raw.endpoint) :]
    r = raw.send("GET", too_long, {"host": raw.host_header})
    assert r.status in (400, 403) and r.code, f"X-Amz-Expires=604801 must be rejected: {r}"
    assert r.body != b"presigned body"

    unknown = raw.with_creds(Creds("NEBULAUNKNOWNKEY0000", SECRET_KEY))
    u = unknown.presigned_url("GET", path, 300)[len(raw.endpoint) :]
    assert_error(raw.send("GET", u, {"host": raw.host_header}), 403, "InvalidAccessKeyId")

    put = raw.presigned_url("PUT", object_path(bucket, "pre/put"), 300)[len(raw.endpoint) :]
    r = raw.send("PUT", put, {"host": raw.host_header, "content-length": "11"}, b"via presign")
    assert r.status == 200, r
    assert raw.get(bucket, "pre/put").body == b"via presign"


# =============================================================================================
# concurrency and atomicity


def test_concurrent_puts_same_key(raw, bucket):
    size = 4 * MIB
    for rnd in range(3):
        bodies = [os.urandom(size) for _ in range(6)]
        shas = {sha256_bytes(b): hashlib.md5(b).hexdigest() for b in bodies}
        barrier = threading.Barrier(len(bodies))

        def put(b):
            barrier.wait()
            return raw.put(bucket, "race/key", b)

        with cf.ThreadPoolExecutor(len(bodies)) as ex:
            results = list(ex.map(put, bodies))
        for r in results:
            assert r.status in (200, 409, 503), r
        assert any(r.status == 200 for r in results)
        got = raw.get(bucket, "race/key")
        s = sha256_bytes(got.body)
        assert s in shas, f"round {rnd}: final object is not any single writer's full body (len {len(got.body)})"
        assert got.header("etag") == f'"{shas[s]}"', "ETag does not describe the stored bytes"
        page = parse_list(raw.list_v2(bucket, prefix="race/").body)
        assert page["keys"] == ["race/key"], f"temporary files visible in listing: {page['keys']}"


def test_get_never_sees_partial_object(raw, bucket):
    size = 3 * MIB
    versions = [os.urandom(size) for _ in range(6)]
    known = {sha256_bytes(v) for v in versions}
    assert raw.put(bucket, "atomic/key", versions[0]).status == 200
    stop = threading.Event()
    bad: list[str] = []
    reads = [0]

    def reader():
        while not stop.is_set():
            r = raw.get(bucket, "atomic/key")
            reads[0] += 1
            if r.status != 200:
                bad.append(f"status {r.status} {r.code}")
            elif sha256_bytes(r.body) not in known or int(r.header("content-length")) != len(r.body):
                bad.append(f"partial/mixed body len={len(r.body)} cl={r.header('content-length')}")

    def slow_body(data):
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]
            time.sleep(0.01)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for v in versions[1:]:
            r = raw.request(
                "PUT", object_path(bucket, "atomic/key"), body=slow_body(v), content_length=len(v),
                payload_hash=hashlib.sha256(v).hexdigest(),
            )
            assert r.status == 200, r
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert reads[0] > 5
    assert not bad, f"{len(bad)} of {reads[0]} GETs saw a partial object: {bad[:5]}"


def test_get_during_slow_put_sees_previous_version(raw, bucket):
    old = os.urandom(1 * MIB)
    new = os.urandom(2 * MIB)
    assert raw.put(bucket, "slow/key", old).status == 200
    half = threading.Event()
    go_on = threading.Event()

    def body():
        yield new[: MIB]
        half.set()
        go_on.wait(30)
        yield new[MIB:]

    result = {}

    def writer():
        result["r"] = raw.request(
            "PUT", object_path(bucket, "slow/key"), body=body(), content_length=len(new),
            payload_hash=hashlib.sha256(new).hexdigest(),
        )

    def writer_new():
        result["n"] = raw.request(
            "PUT", object_path(bucket, "slow/brand-new"), body=body2(), content_length=len(new),
            payload_hash=hashlib.sha256(new).hexdigest(),
        )

    half2 = threading.Event()

    def body2():
        yield new[: MIB]
        half2.set()
        go_on.wait(30)
        yield new[MIB:]

    t = threading.Thread(target=writer)
    t2 = threading.Thread(target=writer_new)
    t.start()
    t2.start()
    try:
        assert half.wait(10) and half2.wait(10)
        time.sleep(0.3)
        r = raw.get(bucket, "slow/key")
        assert r.status == 200 and sha256_bytes(r.body) == sha256_bytes(old), "GET during a PUT saw the new, partial bytes"
        r = raw.head(bucket, "slow/brand-new")
        assert r.status == 404, f"object visible before its PUT finished: {r}"
        page = parse_list(raw.list_v2(bucket, prefix="slow/").body)
        assert page["keys"] == ["slow/key"], page["keys"]
        assert page["contents"][0]["Size"] == len(old)
    finally:
        go_on.set()
        t.join(60)
        t2.join(60)
    assert result["r"].status == 200 and result["n"].status == 200
    assert sha256_bytes(raw.get(bucket, "slow/key").body) == sha256_bytes(new)
    assert sha256_bytes(raw.get(bucket, "slow/brand-new").body) == sha256_bytes(new)


# =============================================================================================
# streaming: 2 GiB PUT and GET with bounded memory


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_2gib_put_get_bounded_rss(start_gateway, tmp_path):
    size = 2 * 1024 * MIB
    g = start_gateway()
    raw = g.raw()
    name = new_bucket_name("big")
    assert raw.put_bucket(name).status == 200
    src = tmp_path / "big.bin"
    want_sha, want_md5 = make_random_file(src, size, md5=True)
    t0 = time.monotonic()
    baseline = g.peak_rss_kib()
    try:
        with open(src, "rb") as f:
            r = raw.request(
                "PUT", object_path(name, "big/2gib.bin"), body=f, content_length=size, payload_hash=want_sha
            )
        assert r.status == 200, r
        assert r.header("etag") == f'"{want_md5}"'
        peak_put = g.peak_rss_kib()
        t_put = time.monotonic() - t0
        h = raw.head(name, "big/2gib.bin")
        assert int(h.header("content-length")) == size
        got = hashlib.sha256()
        n = [0]

        def feed(b):
            got.update(b)
            n[0] += len(b)

        r = raw.request("GET", object_path(name, "big/2gib.bin"), stream_to=feed)
        assert r.status == 200, r
        assert n[0] == size
        assert got.hexdigest() == want_sha
        peak = g.peak_rss_kib()
        t_get = time.monotonic() - t0 - t_put
        print(f"2 GiB: PUT {t_put:.1f} s, GET {t_get:.1f} s, peak RSS {peak_put} KiB after PUT, {peak} KiB after GET")
        limit = 100 * 1024
        assert peak_put < limit, f"peak RSS after 2 GiB PUT {peak_put} KiB >= 100 MiB (baseline {baseline} KiB)"
        assert peak < limit, f"peak RSS after 2 GiB GET {peak} KiB >= 100 MiB (baseline {baseline} KiB)"
    finally:
        src.unlink(missing_ok=True)
        raw.delete(name, "big/2gib.bin")
