"""boto3 (pinned in requirements.txt) with its default checksum behaviour (CRC32 when supported)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import http.client
import urllib.parse
import urllib.request

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import new_bucket_name
from nebula_helpers import MIB, make_random_file, multipart_etag, sha256_bytes, sha256_file


@pytest.fixture(scope="module")
def s3(gw):
    return gw.boto3_client()


@pytest.fixture(scope="module")
def bbucket(s3):
    name = new_bucket_name("boto3")
    s3.create_bucket(Bucket=name)
    return name


def err_code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def http_status(e: ClientError) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


def test_boto3_bucket_operations(s3):
    name = new_bucket_name("b3ops")
    s3.create_bucket(Bucket=name)
    s3.head_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.create_bucket(Bucket=name)  # us-east-1: owned bucket → 200
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] in (None, "us-east-1")
    s3.put_object(Bucket=name, Key="k", Body=b"v")
    with pytest.raises(ClientError) as ei:
        s3.delete_bucket(Bucket=name)
    assert err_code(ei.value) == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as ei:
        s3.head_bucket(Bucket=name)
    assert http_status(ei.value) == 404


def test_boto3_put_get_default_checksum(s3, bbucket):
    data = os.urandom(300_000)
    sent = []
    hook = lambda request, **kw: sent.append(dict(request.headers))  # noqa: E731
    s3.meta.events.register("before-send.s3.PutObject", hook)
    try:
        r = s3.put_object(Bucket=bbucket, Key="put/obj.bin", Body=data)
    finally:
        s3.meta.events.unregister("before-send.s3.PutObject", hook)
    # boto3's default (request_checksum_calculation=when_supported): a CRC32 checksum on every PUT
    # (as a header over plain HTTP; trailers are used over HTTPS only)
    assert any(k.lower() == "x-amz-checksum-crc32" for k in sent[0]), sent[0]
    assert r["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    got = s3.get_object(Bucket=bbucket, Key="put/obj.bin")
    assert sha256_bytes(got["Body"].read()) == sha256_bytes(data)
    # a streamed body of unknown length (boto3 sends it aws-chunked with a CRC32 trailer)
    s3.put_object(Bucket=bbucket, Key="put/stream.bin", Body=io.BufferedReader(io.BytesIO(data)))
    got = s3.get_object(Bucket=bbucket, Key="put/stream.bin")
    assert sha256_bytes(got["Body"].read()) == sha256_bytes(data)
    for algo in ("CRC32", "SHA1", "SHA256"):
        s3.put_object(Bucket=bbucket, Key=f"put/{algo}", Body=data, ChecksumAlgorithm=algo)
        assert sha256_bytes(s3.get_object(Bucket=bbucket, Key=f"put/{algo}")["Body"].read()) == sha256_bytes(data)


@pytest.mark.timeout(600)
def test_boto3_upload_download_file_multipart_threads(s3, bbucket, tmp_path):
    src = tmp_path / "multi.bin"
    want = make_random_file(src, 23 * MIB + 17)
    cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4, use_threads=True)
    s3.upload_file(str(src), bbucket, "transfer/multi.bin", Config=cfg)
    head = s3.head_object(Bucket=bbucket, Key="transfer/multi.bin")
    assert head["ContentLength"] == 23 * MIB + 17
    data = src.read_bytes()
    parts = [data[i : i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    assert head["ETag"] == multipart_etag(parts)
    out = tmp_path / "multi.out"
    s3.download_file(bbucket, "transfer/multi.bin", str(out), Config=cfg)  # ranged GETs in threads
    assert sha256_file(out) == want


def test_boto3_upload_fileobj_small(s3, bbucket):
    data = os.urandom(1000)
    s3.upload_fileobj(io.BytesIO(data), bbucket, "transfer/small.bin")
    buf = io.BytesIO()
    s3.download_fileobj(bbucket, "transfer/small.bin", buf)
    assert buf.getvalue() == data


@pytest.mark.parametrize("sigver", ["default", "s3v4"])
def test_boto3_presigned_get_and_put(gw, bbucket, sigver):
    """boto3's default presigner makes SigV2 query URLs for S3; apps that set s3v4 get SigV4 ones."""
    s3 = gw.boto3_client() if sigver == "default" else gw.boto3_client(signature_version="s3v4")
    data = os.urandom(50_000)
    s3.put_object(Bucket=bbucket, Key="presign/get.bin", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bbucket, "Key": "presign/get.bin"}, ExpiresIn=300)
    assert ("X-Amz-Signature=" in url) == (sigver == "s3v4"), url
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        assert sha256_bytes(r.read()) == sha256_bytes(data)
    up = os.urandom(40_000)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bbucket, "Key": "presign/put.bin"}, ExpiresIn=300)
    # http.client rather than urllib: urllib adds a Content-Type, which SigV2 signs (→ 403 on AWS too)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("PUT", u.path + "?" + u.query, body=up, headers={"Content-Length": str(len(up))})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    conn.close()
    assert sha256_bytes(s3.get_object(Bucket=bbucket, Key="presign/put.bin")["Body"].read()) == sha256_bytes(up)


def test_boto3_copy(s3, bbucket, tmp_path):
    data = os.urandom(200_000)
    s3.put_object(Bucket=bbucket, Key="copy/src", Body=data, Metadata={"k": "v"}, ContentType="text/x-a")
    r = s3.copy_object(Bucket=bbucket, Key="copy/dst", CopySource={"Bucket": bbucket, "Key": "copy/src"})
    assert r["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    h = s3.head_object(Bucket=bbucket, Key="copy/dst")
    assert h["Metadata"] == {"k": "v"} and h["ContentType"] == "text/x-a"
    s3.copy_object(
        Bucket=bbucket, Key="copy/replaced", CopySource={"Bucket": bbucket, "Key": "copy/src"},
        MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="text/x-b",
    )
    h = s3.head_object(Bucket=bbucket, Key="copy/replaced")
    assert h["Metadata"] == {"new": "1"} and h["ContentType"] == "text/x-b"
    # managed copy (multipart copy for large objects → UploadPartCopy with ranges)
    big = tmp_path / "big"
    make_random_file(big, 12 * MIB)
    s3.upload_file(str(big), bbucket, "copy/big-src", Config=TransferConfig(multipart_threshold=64 * MIB))
    s3.copy(
        {"Bucket": bbucket, "Key": "copy/big-src"}, bbucket, "copy/big-dst",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    h = s3.head_object(Bucket=bbucket, Key="copy/big-dst")
    assert h["ETag"].endswith('-3"'), h["ETag"]
    assert sha256_bytes(s3.get_object(Bucket=bbucket, Key="copy/big-dst")["Body"].read()) == sha256_file(big)
    for name in ("copy/dst", "copy/replaced"):
        assert sha256_bytes(s3.get_object(Bucket=bbucket, Key=name)["Body"].read()) == sha256_bytes(data)


def test_boto3_list_paginator(s3, bbucket):
    keys = sorted(f"pager/{d}/obj{i:03d}" for d in ("x", "y") for i in range(60))
    for k in keys:
        s3.put_object(Bucket=bbucket, Key=k, Body=k.encode())
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bbucket, Prefix="pager/", PaginationConfig={"PageSize": 50}))
    assert len(pages) == 3
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == keys
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=bbucket, Prefix="pager/", PaginationConfig={"PageSize": 35}))
    assert len(pages) == 4
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == keys
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bbucket, Prefix="pager/", Delimiter="/"))
    assert [cp["Prefix"] for p in pages for cp in p.get("CommonPrefixes", [])] == ["pager/x/", "pager/y/"]
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bbucket, Prefix="pager/x/", StartAfter="pager/x/obj049"))
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == keys[50:60]


def test_boto3_delete_objects(s3, bbucket):
    keys = [f"del/{i}" for i in range(10)]
    for k in keys:
        s3.put_object(Bucket=bbucket, Key=k, Body=b"x")
    r = s3.delete_objects(Bucket=bbucket, Delete={"Objects": [{"Key": k} for k in keys[:5]]})
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted(keys[:5])
    assert not r.get("Errors")
    r = s3.delete_objects(Bucket=bbucket, Delete={"Objects": [{"Key": k} for k in keys[5:]], "Quiet": True})
    assert not r.get("Deleted") and not r.get("Errors")
    assert s3.list_objects_v2(Bucket=bbucket, Prefix="del/")["KeyCount"] == 0


def test_boto3_metadata_round_trip(s3, bbucket):
    expires = dt.datetime(2044, 12, 1, 16, 0, 0, tzinfo=dt.timezone.utc)
    s3.put_object(
        Bucket=bbucket, Key="meta/doc.pdf", Body=b"%PDF",
        ContentType="application/pdf", ContentDisposition='inline; filename="doc.pdf"',
        ContentEncoding="identity", ContentLanguage="en-GB", CacheControl="no-store", Expires=expires,
        Metadata={"Author": "Grace Hopper", "version": "3"},
    )
    for h in (s3.head_object(Bucket=bbucket, Key="meta/doc.pdf"), s3.get_object(Bucket=bbucket, Key="meta/doc.pdf")):
        assert h["ContentType"] == "application/pdf"
        assert h["ContentDisposition"] == 'inline; filename="doc.pdf"'
        assert h["ContentEncoding"] == "identity"
        assert h["ContentLanguage"] == "en-GB"
        assert h["CacheControl"] == "no-store"
        assert h.get("Expires") == expires or h.get("ExpiresString", "").startswith("Thu, 01 Dec 2044")
        assert h["Metadata"] == {"author": "Grace Hopper", "version": "3"}


def test_boto3_conditional_and_range(s3, bbucket):
    data = os.urandom(4096)
    etag = s3.put_object(Bucket=bbucket, Key="cond/x", Body=data)["ETag"]
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bbucket, Key="cond/x", IfNoneMatch=etag)
    assert http_status(ei.value) == 304
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bbucket, Key="cond/x", IfMatch='"deadbeef"')
    assert http_status(ei.value) == 412
    r = s3.get_object(Bucket=bbucket, Key="cond/x", Range="bytes=10-19")
    assert r["ContentRange"] == "bytes 10-19/4096" and r["Body"].read() == data[10:20]
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bbucket, Key="cond/missing")
    assert err_code(ei.value) == "NoSuchKey"


def test_boto3_multipart_low_level(s3, bbucket):
    key = "mpu/low-level"
    up = s3.create_multipart_upload(Bucket=bbucket, Key=key)
    parts_data = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(12345)]
    parts = []
    for n, d in enumerate(parts_data, 1):
        r = s3.upload_part(Bucket=bbucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=d)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    lp = s3.list_parts(Bucket=bbucket, Key=key, UploadId=up["UploadId"])
    assert [p["PartNumber"] for p in lp["Parts"]] == [1, 2, 3]
    uploads = s3.list_multipart_uploads(Bucket=bbucket).get("Uploads", [])
    assert up["UploadId"] in [u["UploadId"] for u in uploads]
    r = s3.complete_multipart_upload(Bucket=bbucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    assert r["ETag"] == multipart_etag(parts_data)
    assert sha256_bytes(s3.get_object(Bucket=bbucket, Key=key)["Body"].read()) == sha256_bytes(b"".join(parts_data))


def test_boto3_complete_multipart_refusals_are_s3_xml_errors(s3, bbucket):
    """CompleteMultipartUpload's checks (order, known parts and ETags, 5 MiB minimum) answer
    400 with the S3 code in an XML error body, and leave the upload completable."""
    bodies = []

    def keep_body(response_dict, **_):
        bodies.append((response_dict["status_code"], response_dict["headers"], response_dict["body"]))

    s3.meta.events.register("before-parse.s3.CompleteMultipartUpload", keep_body)
    try:
        key = "mpu/refusals"
        uid = s3.create_multipart_upload(Bucket=bbucket, Key=key)["UploadId"]
        data = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1000)]
        etags = [
            s3.upload_part(Bucket=bbucket, Key=key, UploadId=uid, PartNumber=n, Body=d)["ETag"]
            for n, d in enumerate(data, 1)
        ]
        part = lambda n, etag=None: {"PartNumber": n, "ETag": etag or etags[n - 1]}  # noqa: E731
        bogus = '"' + "0" * 32 + '"'
        cases = [
            ([part(2), part(1), part(3)], "InvalidPartOrder"),
            ([part(1), part(2, bogus), part(3)], "InvalidPart"),
            ([part(1), part(2), part(4, etags[2])], "InvalidPart"),
        ]
        for parts, code in cases:
            with pytest.raises(ClientError) as ei:
                s3.complete_multipart_upload(Bucket=bbucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
            assert (err_code(ei.value), http_status(ei.value)) == (code, 400), parts
            status, headers, body = bodies[-1]
            assert status == 400
            assert headers.get("content-type", "").startswith("application/xml"), headers
            assert body.startswith(b"<?xml") and f"<Error><Code>{code}</Code>".encode() in body, body
        # None of the refusals used the upload up.
        r = s3.complete_multipart_upload(
            Bucket=bbucket, Key=key, UploadId=uid, MultipartUpload={"Parts": [part(1), part(2), part(3)]}
        )
        assert r["ETag"] == multipart_etag(data)

        # A part other than the last under 5 MiB.
        key = "mpu/too-small"
        uid = s3.create_multipart_upload(Bucket=bbucket, Key=key)["UploadId"]
        small = [os.urandom(1024), os.urandom(1024)]
        parts = [
            {"PartNumber": n, "ETag": s3.upload_part(Bucket=bbucket, Key=key, UploadId=uid, PartNumber=n, Body=d)["ETag"]}
            for n, d in enumerate(small, 1)
        ]
        with pytest.raises(ClientError) as ei:
            s3.complete_multipart_upload(Bucket=bbucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
        assert (err_code(ei.value), http_status(ei.value)) == ("EntityTooSmall", 400)
        status, headers, body = bodies[-1]
        assert headers.get("content-type", "").startswith("application/xml"), headers
        assert body.startswith(b"<?xml") and b"<Error><Code>EntityTooSmall</Code>" in body, body
        s3.abort_multipart_upload(Bucket=bbucket, Key=key, UploadId=uid)
    finally:
        s3.meta.events.unregister("before-parse.s3.CompleteMultipartUpload", keep_body)
