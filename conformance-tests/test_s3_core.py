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
import zlib

import pytest
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from botocore.httpchecksum import StreamingChecksumBody

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


def test_repeated_complete_multipart_answers_the_same_version_id(s3):
    """Before: the retry in a versioning-Suspended bucket lost the first answer's `null`."""
    bucket = new_bucket_name("mpver")
    s3.create_bucket(Bucket=bucket)
    for state in ("Enabled", "Suspended"):
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": state})
        key = f"{state}.bin"
        up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=b"v" * 10)["ETag"]
        parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
        done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload=parts)
        again = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload=parts)
        assert again.get("VersionId") == done.get("VersionId") == s3.head_object(Bucket=bucket, Key=key)["VersionId"]
        if state == "Suspended":
            assert done["VersionId"] == "null"
        else:
            assert done["VersionId"] not in (None, "null")


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
        # Before: HEAD answered 200 (s3s dropped the status).
        assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert head["ContentRange"] == got["ContentRange"]
        offset += len(body)
    assert error_of(lambda: s3.get_object(Bucket=cbucket, Key="parts/obj.bin", PartNumber=4)) == (
        416,
        "InvalidPartNumber",
    )
    r = raw.get(cbucket, "parts/obj.bin", query=[("partNumber", "1")], headers={"range": "bytes=0-1"})
    assert r.status == 400 and r.code == "InvalidRequest", r
    ranged = s3.head_object(Bucket=cbucket, Key="parts/obj.bin", Range="bytes=10-19")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == f"bytes 10-19/{total}" and ranged["ContentLength"] == 10
    whole = s3.head_object(Bucket=cbucket, Key="parts/obj.bin")
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 200 and "ContentRange" not in whole
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


def _reflected_crc(poly: int, bits: int):
    """A table-driven reflected CRC (init and final XOR all ones), as CRC32C and CRC64NVME are:
    botocore computes those only with awscrt, which the suite does not install."""
    mask = (1 << bits) - 1
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)

    def crc(data: bytes) -> int:
        c = mask
        for b in data:
            c = table[(c ^ b) & 0xFF] ^ (c >> 8)
        return c ^ mask

    return crc


CRCS = {
    "CRC32": (zlib.crc32, 4),
    "CRC32C": (_reflected_crc(0x82F63B78, 32), 4),
    "CRC64NVME": (_reflected_crc(0x9A6C9329AC4BC9B5, 64), 8),
}


def crc_b64(algo: str, data: bytes) -> str:
    crc, width = CRCS[algo]
    return base64.b64encode(crc(data).to_bytes(width, "big")).decode()


def test_crc_helpers_match_the_catalogue():
    assert [CRCS[a][0](b"123456789") for a in CRCS] == [0xCBF43926, 0xE3069283, 0xAE8B14860A799888]


@pytest.fixture(scope="module")
def mp_data():
    return [os.urandom(5 << 20), os.urandom(1000)]


@pytest.fixture(scope="module")
def bare_s3(gw):
    """A client sending only the checksums a test gives: the gateway computes the parts'."""
    return gw.boto3_client(signature_version="s3v4", request_checksum_calculation="when_required")


def _upload_parts(s3, bucket, key, data, **create):
    out = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)
    up = out["UploadId"]
    parts = []
    for n, body in enumerate(data, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=body)
        part = {"PartNumber": n, "ETag": r["ETag"]}
        part.update({k: v for k, v in r.items() if k.startswith("Checksum")})
        parts.append(part)
    return out, up, parts


@pytest.mark.parametrize("algo", ["CRC32", "CRC32C"])
def test_composite_multipart_checksum(bare_s3, cbucket, mp_data, algo):
    s3, key = bare_s3, f"composite/{algo}.bin"
    created, up, parts = _upload_parts(s3, cbucket, key, mp_data, ChecksumAlgorithm=algo, ChecksumType="COMPOSITE")
    assert created["ChecksumType"] == "COMPOSITE" and created["ChecksumAlgorithm"] == algo
    field = f"Checksum{algo}"
    assert [p[field] for p in parts] == [crc_b64(algo, b) for b in mp_data]
    listed = s3.list_parts(Bucket=cbucket, Key=key, UploadId=up)
    assert listed["ChecksumType"] == "COMPOSITE" and listed["ChecksumAlgorithm"] == algo
    done = s3.complete_multipart_upload(Bucket=cbucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
    of_parts = b"".join(base64.b64decode(p[field]) for p in parts)
    expected = f"{crc_b64(algo, of_parts)}-2"
    assert done[field] == expected and done["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=cbucket, Key=key, ChecksumMode="ENABLED")
    assert head[field] == expected and head["ChecksumType"] == "COMPOSITE"
    attrs = s3.get_object_attributes(Bucket=cbucket, Key=key, ObjectAttributes=["Checksum"])
    assert attrs["Checksum"] == {field: expected, "ChecksumType": "COMPOSITE"}


@pytest.mark.parametrize("algo", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_multipart_checksum(bare_s3, cbucket, mp_data, algo):
    """Before: FULL_OBJECT uploads got no checksum at all, and a whole-object value sent to
    CompleteMultipartUpload was not checked."""
    s3, key = bare_s3, f"full/{algo}.bin"
    created, up, parts = _upload_parts(s3, cbucket, key, mp_data, ChecksumAlgorithm=algo, ChecksumType="FULL_OBJECT")
    assert created["ChecksumType"] == "FULL_OBJECT"
    assert s3.list_parts(Bucket=cbucket, Key=key, UploadId=up)["ChecksumType"] == "FULL_OBJECT"
    field = f"Checksum{algo}"
    whole = b"".join(mp_data)
    expected = crc_b64(algo, whole)
    wrong = crc_b64(algo, whole + b"x")

    def complete(value, **kw):
        return s3.complete_multipart_upload(
            Bucket=cbucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts}, **{field: value}, **kw
        )

    assert error_of(lambda: complete(wrong, ChecksumType="FULL_OBJECT")) == (400, "BadDigest")
    assert error_of(lambda: complete(expected, ChecksumType="COMPOSITE")) == (400, "InvalidRequest")
    # The refused completions left the upload as it was.
    done = complete(expected, ChecksumType="FULL_OBJECT")
    assert done[field] == expected and done["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=cbucket, Key=key, ChecksumMode="ENABLED")
    assert head[field] == expected and head["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=cbucket, Key=key, ChecksumMode="ENABLED")
    assert got[field] == expected and got["ChecksumType"] == "FULL_OBJECT"
    assert got["Body"].read() == whole
    attrs = s3.get_object_attributes(Bucket=cbucket, Key=key, ObjectAttributes=["Checksum"])
    assert attrs["Checksum"] == {field: expected, "ChecksumType": "FULL_OBJECT"}


def test_full_object_checksum_by_boto3_upload_with_a_precomputed_crc(s3, cbucket, mp_data, tmp_path):
    """s3transfer sends a given ChecksumCRC32 as the FULL_OBJECT checksum of a multipart upload;
    botocore checks the GET body against the CRC32 answered."""
    whole = b"".join(mp_data)
    f = tmp_path / "big.bin"
    f.write_bytes(whole)
    config = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    value = crc_b64("CRC32", whole)
    s3.upload_file(str(f), cbucket, "full/boto3.bin", ExtraArgs={"ChecksumCRC32": value}, Config=config)
    head = s3.head_object(Bucket=cbucket, Key="full/boto3.bin", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == value and head["ChecksumType"] == "FULL_OBJECT"
    assert head["ETag"].endswith('-2"')
    got = s3.get_object(Bucket=cbucket, Key="full/boto3.bin", ChecksumMode="ENABLED")
    # botocore checks the body against the CRC32 as it is read (and raises on a mismatch).
    assert isinstance(got["Body"], StreamingChecksumBody)
    assert got["Body"].read() == whole
    bad = crc_b64("CRC32", b"other")
    with pytest.raises(S3UploadFailedError) as e:
        s3.upload_file(str(f), cbucket, "full/boto3-bad.bin", ExtraArgs={"ChecksumCRC32": bad}, Config=config)
    assert "BadDigest" in str(e.value)
    assert error_of(lambda: s3.head_object(Bucket=cbucket, Key="full/boto3-bad.bin"))[0] == 404


def test_checksum_types_s3_refuses_at_create(s3, cbucket):
    for algo, kind in (("SHA256", "FULL_OBJECT"), ("SHA1", "FULL_OBJECT"), ("CRC64NVME", "COMPOSITE")):
        assert error_of(
            lambda: s3.create_multipart_upload(Bucket=cbucket, Key="refused", ChecksumAlgorithm=algo, ChecksumType=kind)
        ) == (400, "InvalidRequest"), (algo, kind)
    assert error_of(lambda: s3.create_multipart_upload(Bucket=cbucket, Key="refused", ChecksumType="FULL_OBJECT")) == (
        400,
        "InvalidRequest",
    )
    # CRC64NVME is FULL_OBJECT by default, the others COMPOSITE.
    assert s3.create_multipart_upload(Bucket=cbucket, Key="d", ChecksumAlgorithm="CRC64NVME")["ChecksumType"] == (
        "FULL_OBJECT"
    )
    assert s3.create_multipart_upload(Bucket=cbucket, Key="d", ChecksumAlgorithm="SHA256")["ChecksumType"] == "COMPOSITE"


def test_composite_crc32c_multipart_with_the_aws_cli(gw, cbucket, mp_data, tmp_path):
    """The aws CLI computes CRC32C itself (with its bundled awscrt); its version predates
    `--checksum-type`, so only COMPOSITE is shown with it."""
    env = gw.client_env()
    aws = [AWS_BIN, "--endpoint-url", gw.endpoint, "s3api"]
    key = "composite/cli.bin"

    def call(*args):
        return json.loads(run([*aws, *args], env=env).stdout_text or "{}")

    up = call("create-multipart-upload", "--bucket", cbucket, "--key", key, "--checksum-algorithm", "CRC32C")["UploadId"]
    parts = []
    for n, body in enumerate(mp_data, 1):
        f = tmp_path / f"part{n}"
        f.write_bytes(body)
        r = call("upload-part", "--bucket", cbucket, "--key", key, "--upload-id", up, "--part-number", str(n),
                 "--body", str(f), "--checksum-algorithm", "CRC32C")
        assert r["ChecksumCRC32C"] == crc_b64("CRC32C", body)
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32C": r["ChecksumCRC32C"]})
    done = call("complete-multipart-upload", "--bucket", cbucket, "--key", key, "--upload-id", up,
                "--multipart-upload", json.dumps({"Parts": parts}))
    of_parts = b"".join(base64.b64decode(p["ChecksumCRC32C"]) for p in parts)
    assert done["ChecksumCRC32C"] == f"{crc_b64('CRC32C', of_parts)}-2"
    head = call("head-object", "--bucket", cbucket, "--key", key, "--checksum-mode", "ENABLED")
    assert head["ChecksumCRC32C"] == done["ChecksumCRC32C"]
