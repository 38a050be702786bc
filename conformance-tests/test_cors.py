"""CORS (issue 17): bucket rules set with boto3, preflights and cross-origin requests sent by
curl the way a browser sends them (no signature on the preflight, `Origin` on everything)."""

from __future__ import annotations

import shutil

import pytest
from botocore.exceptions import ClientError

from conftest import new_bucket_name, run
from nebula_helpers import xml_error_code

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

APP = "https://app.example.com"


@pytest.fixture(scope="module")
def s3(gw):
    return gw.boto3_client(signature_version="s3v4")


def curl(gw, method: str, url: str, headers: dict[str, str] | None = None, data: bytes | None = None):
    """One request with curl; returns (status, headers with lower-case names, body)."""
    cmd = ["curl", "-sS", "-X", method, "-D", "-", "-o", "/dev/stdout", url]
    if method == "HEAD":
        cmd = ["curl", "-sS", "-I", "-D", "-", url]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    p = run(cmd, env=gw.client_env(), timeout=60, input=data)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    while head.split(b" ")[1] == b"100":  # `Expect: 100-continue` on larger bodies
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def cors_headers(h: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in h.items() if k.startswith("access-control-")}


RULES = {
    "CORSRules": [
        {
            "ID": "app",
            "AllowedOrigins": ["https://*.example.com"],
            "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
            "AllowedHeaders": ["content-type", "x-amz-*", "authorization"],
            "ExposeHeaders": ["ETag", "x-amz-request-id"],
            "MaxAgeSeconds": 600,
        },
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
    ]
}


@pytest.fixture(scope="module")
def cors_bucket(s3):
    name = new_bucket_name("cors")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_cors(Bucket=name, CORSConfiguration=RULES)
    s3.put_object(Bucket=name, Key="movie.mp4", Body=b"0123456789")
    return name


def test_put_get_delete_bucket_cors(s3):
    name = new_bucket_name("cors")
    s3.create_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket=name)
    assert e.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.put_bucket_cors(Bucket=name, CORSConfiguration=RULES)
    got = s3.get_bucket_cors(Bucket=name)["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://*.example.com"]
    assert got[0]["AllowedMethods"] == ["GET", "PUT", "POST", "HEAD"]
    assert got[0]["AllowedHeaders"] == ["content-type", "x-amz-*", "authorization"]
    assert got[0]["ExposeHeaders"] == ["ETag", "x-amz-request-id"]
    assert got[0]["MaxAgeSeconds"] == 600 and got[0]["ID"] == "app"
    assert got[1] == {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}
    s3.delete_bucket_cors(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket=name)
    assert e.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    # S3 refuses methods a CORS rule cannot allow, and more than one wildcard in an origin.
    for bad in (
        {"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]},
        {"AllowedOrigins": ["https://*.*.example.com"], "AllowedMethods": ["GET"]},
    ):
        with pytest.raises(ClientError) as e:
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [bad]})
        assert e.value.response["Error"]["Code"] == "InvalidRequest"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        s3.put_bucket_cors(Bucket="no-such-bucket-cors", CORSConfiguration=RULES)
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"


def test_no_rules_means_no_cors_headers(gw, s3):
    name = new_bucket_name("cors")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="a.txt", Body=b"a")
    status, h, body = curl(
        gw,
        "OPTIONS",
        f"{gw.endpoint}/{name}/a.txt",
        {"Origin": APP, "Access-Control-Request-Method": "GET"},
    )
    assert status == 403, body
    assert xml_error_code(body) == "AccessForbidden"
    assert b"CORS is not enabled for this bucket" in body
    assert cors_headers(h) == {}
    url = s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "a.txt"})
    status, h, body = curl(gw, "GET", url, {"Origin": APP})
    assert status == 200 and body == b"a"
    assert cors_headers(h) == {} and "vary" not in h


def test_preflight_allowed_without_signature(gw, cors_bucket):
    status, h, body = curl(
        gw,
        "OPTIONS",
        f"{gw.endpoint}/{cors_bucket}/uploads/new%20file.mp4",
        {
            "Origin": APP,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Content-Type, X-Amz-Date, x-amz-content-sha256, Authorization",
        },
    )
    assert status == 200, body
    assert body == b""
    assert h["access-control-allow-origin"] == APP
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-allow-methods"] == "GET, PUT, POST, HEAD"
    assert h["access-control-allow-headers"] == "content-type, x-amz-date, x-amz-content-sha256, authorization"
    assert h["access-control-expose-headers"] == "ETag, x-amz-request-id"
    assert h["access-control-max-age"] == "600"
    assert "Origin" in h["vary"]
    # A preflight on the bucket itself (a browser's ListObjects or POST form upload).
    status, h, _ = curl(
        gw, "OPTIONS", f"{gw.endpoint}/{cors_bucket}", {"Origin": APP, "Access-Control-Request-Method": "POST"}
    )
    assert status == 200 and h["access-control-allow-origin"] == APP
    # The open rule answers any origin with `*` (and no credentials).
    status, h, _ = curl(
        gw,
        "OPTIONS",
        f"{gw.endpoint}/{cors_bucket}/movie.mp4",
        {"Origin": "https://other.test", "Access-Control-Request-Method": "GET"},
    )
    assert status == 200
    assert h["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in h
    assert h["access-control-allow-methods"] == "GET"


@pytest.mark.parametrize(
    "origin,method,req_headers",
    [
        ("https://evil.test", "PUT", None),  # origin only allowed GET by the open rule
        (APP, "DELETE", None),  # method in no rule
        (APP, "PUT", "x-custom-header"),  # header in no rule
        ("https://example.com", "PUT", None),  # `*.example.com` needs a subdomain
    ],
)
def test_preflight_refused_when_no_rule_matches(gw, cors_bucket, origin, method, req_headers):
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if req_headers:
        headers["Access-Control-Request-Headers"] = req_headers
    status, h, body = curl(gw, "OPTIONS", f"{gw.endpoint}/{cors_bucket}/movie.mp4", headers)
    assert status == 403, body
    assert xml_error_code(body) == "AccessForbidden"
    assert "access-control-allow-origin" not in h


def test_preflight_without_origin_is_bad_request(gw, cors_bucket):
    status, _, body = curl(
        gw, "OPTIONS", f"{gw.endpoint}/{cors_bucket}/movie.mp4", {"Access-Control-Request-Method": "GET"}
    )
    assert status == 400 and xml_error_code(body) == "BadRequest"


def test_real_responses_carry_cors_headers(gw, s3, cors_bucket):
    url = s3.generate_presigned_url("get_object", Params={"Bucket": cors_bucket, "Key": "movie.mp4"})
    status, h, body = curl(gw, "GET", url, {"Origin": APP})
    assert status == 200 and body == b"0123456789"
    assert h["access-control-allow-origin"] == APP
    assert h["access-control-expose-headers"] == "ETag, x-amz-request-id"
    assert "Origin" in h["vary"]
    # Errors too, so the page can read them.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": cors_bucket, "Key": "missing"})
    status, h, body = curl(gw, "GET", url, {"Origin": APP})
    assert status == 404 and xml_error_code(body) == "NoSuchKey"
    assert h["access-control-allow-origin"] == APP
    # An origin no rule allows for this method: no grant, only Vary.
    url = s3.generate_presigned_url("put_object", Params={"Bucket": cors_bucket, "Key": "x"})
    status, h, _ = curl(gw, "PUT", url, {"Origin": "https://evil.test"}, data=b"x")
    assert status == 200
    assert "access-control-allow-origin" not in h and "Origin" in h["vary"]
    # Without Origin (any non-browser client) nothing is added.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": cors_bucket, "Key": "movie.mp4"})
    status, h, _ = curl(gw, "GET", url)
    assert status == 200
    assert "vary" not in h and cors_headers(h) == {}


def test_browser_style_multipart_reads_part_etags(gw, s3, cors_bucket):
    """What a browser uploader (Uppy, the AWS JS SDK) does: presigned part PUTs from the page,
    reading each part's ETag from the response, which it may only do when ETag is exposed."""
    key = "big/upload.bin"
    up = s3.create_multipart_upload(Bucket=cors_bucket, Key=key)["UploadId"]
    parts = []
    data = [b"a" * (5 * 1024 * 1024), b"tail"]
    for n, chunk in enumerate(data, start=1):
        url = s3.generate_presigned_url(
            "upload_part", Params={"Bucket": cors_bucket, "Key": key, "UploadId": up, "PartNumber": n}
        )
        status, h, _ = curl(gw, "PUT", url, {"Origin": APP, "Content-Type": "application/octet-stream"}, data=chunk)
        assert status == 200
        assert h["access-control-allow-origin"] == APP
        assert "ETag" in [x.strip() for x in h["access-control-expose-headers"].split(",")]
        parts.append({"PartNumber": n, "ETag": h["etag"]})
    s3.complete_multipart_upload(Bucket=cors_bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
    assert s3.head_object(Bucket=cors_bucket, Key=key)["ContentLength"] == len(data[0]) + len(data[1])


def test_web_app_is_unaffected(gw, cors_bucket):
    status, h, _ = curl(gw, "GET", f"{gw.endpoint}/_nebula/ui/", {"Origin": APP})
    assert status == 200
    assert cors_headers(h) == {}
