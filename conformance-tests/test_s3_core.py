"""S3 semantics still missing in the core (issue 18), one test per item with a real client
(boto3, or hand-signed requests where a header must be sent exactly)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.parse
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import AWS_BIN, new_bucket_name, run
from nebula_helpers import object_path, parse_list, xml_error_code


@pytest.fixture(scope="module")
def s3(gw):
    return gw.boto3_client(signature_version="s3v4")


@pytest.fixture(scope="module")
def cbucket(s3):
    name = new_bucket_name("core")
    s3.create_bucket(Bucket=name)
    return name


def error_of(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


def test_if_none_match_and_if_match_etag_on_put(s3, cbucket):
    """Before: If-None-Match with an ETag answered 501 NotImplemented."""
    etag = s3.put_object(Bucket=cbucket, Key="c.txt", Body=b"one")["ETag"]
    assert error_of(lambda: s3.put_object(Bucket=cbucket, Key="c.txt", Body=b"two", IfNoneMatch=etag)) == (
        412,
        "PreconditionFailed",
    )
    assert s3.get_object(Bucket=cbucket, Key="c.txt")["Body"].read() == b"one"
    other = '"' + hashlib.md5(b"other").hexdigest() + '"'
    s3.put_object(Bucket=cbucket, Key="c.txt", Body=b"two", IfNoneMatch=other)
    assert s3.get_object(Bucket=cbucket, Key="c.txt")["Body"].read() == b"two"
    s3.put_object(Bucket=cbucket, Key="new.txt", Body=b"n", IfNoneMatch=other)
    assert error_of(lambda: s3.put_object(Bucket=cbucket, Key="c.txt", Body=b"3", IfMatch=other)) == (
        412,
        "PreconditionFailed",
    )
    current = s3.head_object(Bucket=cbucket, Key="c.txt")["ETag"]
    s3.put_object(Bucket=cbucket, Key="c.txt", Body=b"three", IfMatch=current)
    assert s3.get_object(Bucket=cbucket, Key="c.txt")["Body"].read() == b"three"


def test_if_none_match_etag_on_complete_multipart(s3, cbucket):
    etag = s3.put_object(Bucket=cbucket, Key="mp.txt", Body=b"old")["ETag"]
    up = s3.create_multipart_upload(Bucket=cbucket, Key="mp.txt")["UploadId"]
    e1 = s3.upload_part(Bucket=cbucket, Key="mp.txt", UploadId=up, PartNumber=1, Body=b"new")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": e1}]}
    assert error_of(
        lambda: s3.complete_multipart_upload(
            Bucket=cbucket, Key="mp.txt", UploadId=up, MultipartUpload=parts, IfNoneMatch=etag
        )
    ) == (412, "PreconditionFailed")
    s3.complete_multipart_upload(Bucket=cbucket, Key="mp.txt", UploadId=up, MultipartUpload=parts, IfMatch=etag)
    assert s3.get_object(Bucket=cbucket, Key="mp.txt")["Body"].read() == b"new"


def test_empty_delimiter_is_not_echoed(raw, s3, cbucket):
    """Before: `delimiter=` came back as an empty <Delimiter/>."""
    s3.put_object(Bucket=cbucket, Key="d/x.txt", Body=b"x")
    for query in ([("list-type", "2"), ("delimiter", "")], [("delimiter", "")]):
        r = raw.request("GET", object_path(cbucket), query=query)
        assert r.status == 200, r
        assert b"<Delimiter" not in r.body, r.body
        assert "d/x.txt" in parse_list(r.body)["keys"]


def test_content_encoding_returned_exactly_as_sent(raw, cbucket):
    """Before: `gzip, br` came back as `gzip,br`."""
    for sent in ("gzip, br", "identity", "x-custom;q=1"):
        r = raw.put(cbucket, "enc.bin", b"\x1f\x8b", headers={"content-encoding": sent})
        assert r.status == 200, r
        assert raw.get(cbucket, "enc.bin").header("content-encoding") == sent
        assert raw.head(cbucket, "enc.bin").header("content-encoding") == sent


def test_rfc2047_metadata_is_kept_and_returned_as_sent(raw, s3, cbucket):
    """Clients send non-ASCII metadata RFC 2047-encoded; S3 stores and returns the encoded
    word as it came (already right before this change: this test shows it)."""
    word = "=?UTF-8?B?" + base64.b64encode("Zoë – naïve".encode()).decode() + "?="
    r = raw.put(cbucket, "meta.txt", b"m", headers={"x-amz-meta-title": word})
    assert r.status == 200, r
    assert raw.head(cbucket, "meta.txt").header("x-amz-meta-title") == word
    assert s3.head_object(Bucket=cbucket, Key="meta.txt")["Metadata"] == {"title": word}


def test_presigned_expires_out_of_range_and_expired(gw, s3, cbucket):
    """Already right before this change (the front caps X-Amz-Expires; s3s checks expiry)."""
    s3.put_object(Bucket=cbucket, Key="p.txt", Body=b"p")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": cbucket, "Key": "p.txt"}, ExpiresIn=60)
    for bad in ("-1", "604801"):
        forged = url.replace("X-Amz-Expires=60", f"X-Amz-Expires={bad}")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(forged)
        assert e.value.code == 400
        assert xml_error_code(e.value.read()) == "AuthorizationQueryParametersError"
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": cbucket, "Key": "p.txt"}, ExpiresIn=1)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(expired)
    assert e.value.code == 403 and xml_error_code(e.value.read()) == "AccessDenied"


def test_repeated_complete_multipart_answers_the_same_result(s3, cbucket):
    """Before: a retried CompleteMultipartUpload (the first answer lost) was 404 NoSuchUpload."""
    key = "retry/mp.bin"
    up = s3.create_multipart_upload(Bucket=cbucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    first = s3.upload_part(Bucket=cbucket, Key=key, UploadId=up, PartNumber=1, Body=b"a" * (5 << 20))
    second = s3.upload_part(Bucket=cbucket, Key=key, UploadId=up, PartNumber=2, Body=b"b" * 10)
    parts = [
        {"PartNumber": 1, "ETag": first["ETag"], "ChecksumSHA256": first["ChecksumSHA256"]},
        {"PartNumber": 2, "ETag": second["ETag"], "ChecksumSHA256": second["ChecksumSHA256"]},
    ]
    # A part list naming a part twice is out of order, as S3 answers (unchanged).
    assert error_of(
        lambda: s3.complete_multipart_upload(
            Bucket=cbucket, Key=key, UploadId=up, MultipartUpload={"Parts": [parts[0], parts[0], parts[1]]}
        )
    ) == (400, "InvalidPartOrder")
    done = s3.complete_multipart_upload(Bucket=cbucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
    again = s3.complete_multipart_upload(Bucket=cbucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
    for field in ("Bucket", "Key", "ETag", "ChecksumSHA256", "Location"):
        assert again[field] == done[field], field
    assert again["ETag"].endswith('-2"')
    assert s3.get_object(Bucket=cbucket, Key=key)["Body"].read() == b"a" * (5 << 20) + b"b" * 10
    # The upload itself is gone: only its completion is remembered, and only for its key.
    assert error_of(lambda: s3.list_parts(Bucket=cbucket, Key=key, UploadId=up)) == (404, "NoSuchUpload")
    assert error_of(
        lambda: s3.complete_multipart_upload(
            Bucket=cbucket, Key="retry/other.bin", UploadId=up, MultipartUpload={"Parts": parts}
        )
    ) == (404, "NoSuchUpload")


def test_reuploaded_part_number_takes_the_last_upload(s3, cbucket):
    """UploadPart of a part number already uploaded replaces it (already right before)."""
    key = "retry/reupload.bin"
    up = s3.create_multipart_upload(Bucket=cbucket, Key=key)["UploadId"]
    old = s3.upload_part(Bucket=cbucket, Key=key, UploadId=up, PartNumber=1, Body=b"old")["ETag"]
    new = s3.upload_part(Bucket=cbucket, Key=key, UploadId=up, PartNumber=1, Body=b"new")["ETag"]
    assert error_of(
        lambda: s3.complete_multipart_upload(
            Bucket=cbucket, Key=key, UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": old}]}
        )
    ) == (400, "InvalidPart")
    s3.complete_multipart_upload(
        Bucket=cbucket, Key=key, UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": new}]}
    )
    assert s3.get_object(Bucket=cbucket, Key=key)["Body"].read() == b"new"


def test_every_answer_carries_a_request_id_and_errors_repeat_it(gw, raw, s3, cbucket):
    """Before: no x-amz-request-id header, and error bodies had no RequestId or HostId."""
    ok = raw.put(cbucket, "rid.txt", b"r")
    assert ok.status == 200, ok
    ids = {ok.header("x-amz-request-id")}
    host = ok.header("x-amz-id-2")
    assert host
    errors = [
        raw.get(cbucket, "no-such-key"),  # the gateway's own error
        raw.request("GET", object_path("no-such-bucket-rid", "k")),
        raw.with_creds(type(raw.creds)(raw.creds.access_key, "wrong-secret")).get(cbucket, "rid.txt"),  # s3s's
        raw.request("GET", object_path(cbucket, "rid.txt"), query=[("X-Amz-Expires", "604801")], sign=False),
    ]
    for r in errors:
        assert r.status >= 400, r
        root = r.xml()
        rid = root.findtext("RequestId")
        assert rid and rid == r.header("x-amz-request-id"), r
        assert root.findtext("HostId") == r.header("x-amz-id-2") == host, r
        ids.add(rid)
    assert len(ids) == 1 + len(errors), "every request gets its own id"
    head = raw.head(cbucket, "no-such-key")
    assert head.status == 404 and head.header("x-amz-request-id") and not head.body
    # SDKs read them as the response's metadata.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=cbucket, Key="no-such-key")
    meta = e.value.response["ResponseMetadata"]
    assert meta["RequestId"] and meta["HostId"] == host
    assert e.value.response["Error"].get("RequestId", meta["RequestId"]) == meta["RequestId"]


def test_keys_with_control_characters_list_as_s3(raw, s3, cbucket):
    """Keys may hold any character but NUL; listings with encoding-type=url (what SDKs ask
    for) give them back exactly, prefixes included."""
    keys = ["ctl/a\x01b", "ctl/tab\there", "ctl/del\x7f", "ctl/\x1bdir/x", "ctl/nl\nx"]
    for k in keys:
        s3.put_object(Bucket=cbucket, Key=k, Body=k.encode())
    for k in keys:
        assert s3.get_object(Bucket=cbucket, Key=k)["Body"].read() == k.encode()
    listed = s3.list_objects_v2(Bucket=cbucket, Prefix="ctl/")
    assert [o["Key"] for o in listed["Contents"]] == sorted(keys)
    grouped = s3.list_objects(Bucket=cbucket, Prefix="ctl/", Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["ctl/\x1bdir/"]
    assert [o["Key"] for o in grouped["Contents"]] == sorted(k for k in keys if "dir" not in k)
    r = raw.request("GET", object_path(cbucket), query=[("list-type", "2"), ("prefix", "ctl/"), ("encoding-type", "url")])
    assert r.status == 200, r
    for escaped in (b"ctl/a%01b", b"ctl/tab%09here", b"ctl/del%7F", b"ctl/nl%0Ax"):
        assert escaped in r.body, (escaped, r.body)


def test_list_buckets_pages_by_max_buckets_and_continuation_token(gw, raw, s3):
    """Before: max-buckets and continuation-token were ignored (every bucket in one answer)."""
    prefix = new_bucket_name("lbp")[:20]
    names = sorted(f"{prefix}-{i}" for i in range(5))
    for name in names:
        s3.create_bucket(Bucket=name)
    seen, token, pages = [], None, 0
    while True:
        kw = {"Prefix": prefix, "MaxBuckets": 2}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_buckets(**kw)
        pages += 1
        assert page["Prefix"] == prefix
        assert len(page["Buckets"]) <= 2
        seen += [b["Name"] for b in page["Buckets"]]
        token = page.get("ContinuationToken")
        if not token:
            break
    assert seen == names and pages == 3
    paginated = s3.get_paginator("list_buckets").paginate(Prefix=prefix, PaginationConfig={"PageSize": 3})
    assert [b["Name"] for p in paginated for b in p["Buckets"]] == names
    assert [b["Name"] for b in s3.list_buckets(Prefix=prefix, BucketRegion=gw.region)["Buckets"]] == names
    assert s3.list_buckets(Prefix=prefix, BucketRegion="eu-west-3")["Buckets"] == []
    for bad in ("0", "10001", "x"):
        r = raw.request("GET", "/", query=[("max-buckets", bad)])
        assert r.status == 400 and r.code == "InvalidArgument", r
    r = raw.request("GET", "/", query=[("continuation-token", "not-a-token")])
    assert r.status == 400 and r.code == "InvalidArgument", r


def _three_part_object(s3, bucket, key, **create):
    parts = [os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1000)]
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    done = []
    for i, body in enumerate(parts, 1):
        kw = {"ChecksumAlgorithm": create["ChecksumAlgorithm"]} if "ChecksumAlgorithm" in create else {}
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=body, **kw)
        part = {"PartNumber": i, "ETag": r["ETag"]}
        if "ChecksumSHA256" in r:
            part["ChecksumSHA256"] = r["ChecksumSHA256"]
        done.append(part)
    result = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done})
    return parts, result


def test_get_and_head_object_part_number(raw, s3, cbucket):
    """Before: partNumber on a multipart object was 416 InvalidPartNumber for every part."""
    parts, _ = _three_part_object(s3, cbucket, "parts/obj.bin")
    total = sum(map(len, parts))
    offset = 0
    for n, body in enumerate(parts, 1):
        got = s3.get_object(Bucket=cbucket, Key="parts/obj.bin", PartNumber=n)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == body
        assert got["PartsCount"] == 3
        assert got["ContentRange"] == f"bytes {offset}-{offset + len(body) - 1}/{total}"
        head = s3.head_object(Bucket=cbucket, Key="parts/obj.bin", PartNumber=n)
        assert head["ContentLength"] == len(body) and head["PartsCount"] == 3
        offset += len(body)
    assert error_of(lambda: s3.get_object(Bucket=cbucket, Key="parts/obj.bin", PartNumber=4)) == (
        416,
        "InvalidPartNumber",
    )
    r = raw.get(cbucket, "parts/obj.bin", query=[("partNumber", "1")], headers={"range": "bytes=0-1"})
    assert r.status == 400 and r.code == "InvalidRequest", r
    # An object not made of parts is its own part 1.
    s3.put_object(Bucket=cbucket, Key="parts/plain.txt", Body=b"plain")
    whole = s3.get_object(Bucket=cbucket, Key="parts/plain.txt", PartNumber=1)
    assert whole["Body"].read() == b"plain" and "PartsCount" not in whole
    assert error_of(lambda: s3.get_object(Bucket=cbucket, Key="parts/plain.txt", PartNumber=2))[0] == 416


def test_get_object_attributes(gw, s3, cbucket):
    """Before: GetObjectAttributes was 501 NotImplemented."""
    parts, done = _three_part_object(s3, cbucket, "attrs/mp.bin", ChecksumAlgorithm="SHA256")
    every = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
    a = s3.get_object_attributes(Bucket=cbucket, Key="attrs/mp.bin", ObjectAttributes=every)
    assert a["ETag"].strip('"') == done["ETag"].strip('"')
    assert a["ObjectSize"] == sum(map(len, parts))
    assert a["StorageClass"] == "STANDARD"
    assert a["Checksum"]["ChecksumSHA256"] == done["ChecksumSHA256"]
    assert a["Checksum"]["ChecksumType"] == "COMPOSITE"
    assert a["ObjectParts"]["TotalPartsCount"] == 3
    assert [(p["PartNumber"], p["Size"]) for p in a["ObjectParts"]["Parts"]] == [
        (i, len(b)) for i, b in enumerate(parts, 1)
    ]
    page = s3.get_object_attributes(Bucket=cbucket, Key="attrs/mp.bin", ObjectAttributes=["ObjectParts"], MaxParts=2)
    assert page["ObjectParts"]["IsTruncated"] is True
    assert page["ObjectParts"]["NextPartNumberMarker"] == 2
    assert "ETag" not in page and "ObjectSize" not in page
    rest = s3.get_object_attributes(
        Bucket=cbucket, Key="attrs/mp.bin", ObjectAttributes=["ObjectParts"], MaxParts=2, PartNumberMarker=2
    )
    assert [p["PartNumber"] for p in rest["ObjectParts"]["Parts"]] == [3]
    assert rest["ObjectParts"]["IsTruncated"] is False
    put = s3.put_object(Bucket=cbucket, Key="attrs/plain.txt", Body=b"plain", ChecksumAlgorithm="CRC32")
    env = gw.client_env()
    out = run([AWS_BIN, "--endpoint-url", gw.endpoint, "s3api", "get-object-attributes", "--bucket", cbucket,
               "--key", "attrs/plain.txt", "--object-attributes", "ETag", "Checksum", "ObjectSize", "ObjectParts"],
              env=env)
    plain = json.loads(out.stdout_text)
    assert plain["ObjectSize"] == 5 and "ObjectParts" not in plain
    assert plain["Checksum"]["ChecksumCRC32"] == put["ChecksumCRC32"]
    assert plain["ETag"].strip('"') == put["ETag"].strip('"')
    assert error_of(
        lambda: s3.get_object_attributes(Bucket=cbucket, Key="attrs/none", ObjectAttributes=["ETag"])
    ) == (404, "NoSuchKey")
