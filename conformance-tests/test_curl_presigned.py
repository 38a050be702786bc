"""curl on presigned URLs (made by boto3's generate_presigned_url, as an app would)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.parse

import pytest

from conftest import new_bucket_name, run
from nebula_helpers import make_random_file, sha256_file, xml_error_code

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@pytest.fixture(scope="module")
def s3(gw):
    return gw.boto3_client(signature_version="s3v4")


@pytest.fixture(scope="module")
def cbucket(s3):
    name = new_bucket_name("curl")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def obj(s3, cbucket, tmp_path_factory):
    src = tmp_path_factory.mktemp("curl") / "movie part.bin"
    sha = make_random_file(src, 1_234_567)
    s3.upload_file(str(src), cbucket, "media/movie part.bin")
    return src, sha


def curl(gw, *args, out=None):
    """Run curl; return (http_code, headers_text, body_path)."""
    hdr = (out or "/tmp/none") + ".headers" if out else None
    cmd = ["curl", "-sS", "-w", "%{http_code}"]
    if out:
        cmd += ["-o", out, "-D", hdr]
    cmd += list(args)
    p = run(cmd, env=gw.client_env(), timeout=120)
    headers = open(hdr).read() if hdr and os.path.exists(hdr) else ""
    return int(p.stdout_text[-3:]), headers


def presigned(s3, method, bucket, key, expires=300, **params):
    return s3.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key, **params}, ExpiresIn=expires)


def test_curl_presigned_get(gw, s3, cbucket, obj, tmp_path):
    src, sha = obj
    url = presigned(s3, "get_object", cbucket, "media/movie part.bin")
    out = str(tmp_path / "get.out")
    code, headers = curl(gw, url, out=out)
    assert code == 200
    assert sha256_file(out) == sha
    assert f"content-length: {src.stat().st_size}" in headers.lower()


def test_curl_presigned_ranged_get(gw, s3, cbucket, obj, tmp_path):
    src, _ = obj
    url = presigned(s3, "get_object", cbucket, "media/movie part.bin")
    out = str(tmp_path / "range.out")
    code, headers = curl(gw, "-r", "1000-1999", url, out=out)
    assert code == 206
    assert "content-range: bytes 1000-1999/1234567" in headers.lower()
    assert open(out, "rb").read() == src.read_bytes()[1000:2000]
    code, headers = curl(gw, "-r", "-100", url, out=out)
    assert code == 206 and open(out, "rb").read() == src.read_bytes()[-100:]


def test_curl_presigned_put(gw, s3, cbucket, tmp_path):
    src = tmp_path / "upload.bin"
    sha = make_random_file(src, 333_333)
    url = presigned(s3, "put_object", cbucket, "uploads/from curl.bin")
    code, _ = curl(gw, "-T", str(src), url, out=str(tmp_path / "put.out"))
    assert code == 200
    back = tmp_path / "back.bin"
    s3.download_file(cbucket, "uploads/from curl.bin", str(back))
    assert sha256_file(back) == sha


def test_curl_presigned_head(gw, s3, cbucket, obj, tmp_path):
    src, _ = obj
    url = presigned(s3, "head_object", cbucket, "media/movie part.bin")
    out = str(tmp_path / "head.out")
    code, headers = curl(gw, "-I", url, out=out)
    assert code == 200
    h = headers.lower()
    assert f"content-length: {src.stat().st_size}" in h and "etag:" in h and "last-modified:" in h


def test_curl_presigned_expired(gw, s3, cbucket, obj, tmp_path):
    url = presigned(s3, "get_object", cbucket, "media/movie part.bin", expires=1)
    time.sleep(2.5)
    out = str(tmp_path / "expired.out")
    code, _ = curl(gw, url, out=out)
    body = open(out, "rb").read()
    assert code == 403, body
    assert xml_error_code(body) == "AccessDenied", body


@pytest.mark.parametrize("field", ["X-Amz-Signature", "X-Amz-Date", "X-Amz-Expires"])
def test_curl_presigned_tampered(gw, s3, cbucket, obj, tmp_path, field):
    url = presigned(s3, "get_object", cbucket, "media/movie part.bin")
    parts = urllib.parse.urlsplit(url)
    q = parts.query
    start = q.index(field + "=") + len(field) + 1
    # change one character of that parameter's value (keeping it syntactically valid)
    if field == "X-Amz-Date":
        i = start + 14  # the seconds' last digit of YYYYMMDDTHHMMSSZ
    elif field == "X-Amz-Expires":
        i = start
    else:
        i = start + 10
    c = q[i]
    repl = {"0": "1", "1": "2", "2": "3", "3": "4", "4": "5", "5": "6", "6": "7", "7": "8", "8": "9", "9": "0"}.get(c)
    repl = repl or ("a" if c != "a" else "b")
    tampered = urllib.parse.urlunsplit(parts._replace(query=q[:i] + repl + q[i + 1 :]))
    assert tampered != url
    out = str(tmp_path / "tampered.out")
    code, _ = curl(gw, tampered, out=out)
    body = open(out, "rb").read()
    assert code == 403, body
    assert xml_error_code(body) == "SignatureDoesNotMatch", body


def test_curl_presigned_expires_over_a_week_rejected(gw, s3, cbucket, obj, tmp_path):
    url = presigned(s3, "get_object", cbucket, "media/movie part.bin", expires=604801)
    out = str(tmp_path / "week.out")
    code, _ = curl(gw, url, out=out)
    body = open(out, "rb").read()
    assert code in (400, 403) and xml_error_code(body), body


def test_curl_presigned_response_header_overrides(gw, s3, cbucket, obj, tmp_path):
    """A share link that downloads under a chosen name and type: the `response-*` parameters
    are signed into the URL and replace the stored headers in the answer (GET and HEAD)."""
    params = {
        "ResponseContentDisposition": 'attachment; filename="Holiday 2026.bin"',
        "ResponseContentType": "application/x-holiday",
        "ResponseCacheControl": "no-store",
        "ResponseContentLanguage": "fr",
        "ResponseContentEncoding": "identity",
        "ResponseExpires": "Thu, 01 Jan 2037 00:00:00 GMT",
    }
    src, sha = obj
    url = presigned(s3, "get_object", cbucket, "media/movie part.bin", **params)
    out = str(tmp_path / "dl.out")
    code, headers = curl(gw, url, out=out)
    assert code == 200
    assert sha256_file(out) == sha
    h = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in headers.splitlines()[1:]) if k}
    assert h["content-disposition"] == 'attachment; filename="Holiday 2026.bin"'
    assert h["content-type"] == "application/x-holiday"
    assert h["cache-control"] == "no-store"
    assert h["content-language"] == "fr"
    assert h["content-encoding"] == "identity"
    assert h["expires"] == "Thu, 01 Jan 2037 00:00:00 GMT"
    url = presigned(s3, "head_object", cbucket, "media/movie part.bin", ResponseContentType="text/plain")
    code, headers = curl(gw, "-I", url, out=str(tmp_path / "head.out"))
    assert code == 200 and "content-type: text/plain" in headers.lower()
    # The same link without the parameters keeps the stored headers.
    url = presigned(s3, "get_object", cbucket, "media/movie part.bin")
    code, headers = curl(gw, url, out=str(tmp_path / "plain.out"))
    assert code == 200 and "holiday" not in headers.lower() and "no-store" not in headers
    # A parameter added to a signed URL breaks its signature.
    code, _ = curl(gw, url + "&response-content-type=text%2Fhtml", out=str(tmp_path / "forged.out"))
    assert code == 403
