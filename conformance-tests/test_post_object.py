"""POST object (issue 17): browser form uploads. The policy is generated and signed by boto3's
``generate_presigned_post`` (what a web backend does) and the form is sent by curl as a browser
sends it (``multipart/form-data``, the file last, no Authorization header)."""

from __future__ import annotations

import shutil
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from conftest import new_bucket_name, run
from nebula_helpers import strip_ns, xml_error_code

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@pytest.fixture(scope="module")
def s3(gw):
    return gw.boto3_client(signature_version="s3v4")


@pytest.fixture(scope="module")
def pbucket(s3):
    name = new_bucket_name("post")
    s3.create_bucket(Bucket=name)
    return name


def post_form(gw, url: str, fields: dict[str, str], file_path, filename: str | None = None):
    """curl -F, fields in order and the file last; returns (status, headers, body)."""
    cmd = ["curl", "-sS", "-D", "-", "-o", "/dev/stdout", "-H", "Expect:"]
    for k, v in fields.items():
        cmd += ["--form-string", f"{k}={v}"]
    file_arg = f"file=@{file_path}"
    if filename:
        file_arg += f";filename={filename}"
    cmd += ["-F", file_arg, url]
    p = run(cmd, env=gw.client_env(), timeout=60)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def policy(s3, bucket, key, conditions, fields=None, expires=300):
    return s3.generate_presigned_post(bucket, key, Fields=fields or {}, Conditions=conditions, ExpiresIn=expires)


BASE_CONDITIONS = [
    ["starts-with", "$key", "uploads/"],
    ["content-length-range", 1, 1024],
    ["eq", "$Content-Type", "image/jpeg"],
    ["starts-with", "$x-amz-meta-origin", ""],
    {"success_action_status": "201"},
]
BASE_FIELDS = {"Content-Type": "image/jpeg", "x-amz-meta-origin": "form", "success_action_status": "201"}


def test_form_upload_with_filename_variable(gw, s3, pbucket, tmp_path):
    src = tmp_path / "photo.bin"
    src.write_bytes(b"\xff\xd8jpeg bytes")
    p = policy(s3, pbucket, "uploads/${filename}", BASE_CONDITIONS, BASE_FIELDS)
    assert "Authorization" not in p["fields"]
    status, h, body = post_form(gw, p["url"], p["fields"], src, filename="cat.jpg")
    assert status == 201, body
    root = strip_ns(ET.fromstring(body))
    assert root.findtext("Key") == "uploads/cat.jpg"
    assert root.findtext("Bucket") == pbucket
    assert root.findtext("Location") == f"/{pbucket}/uploads/cat.jpg"
    head = s3.head_object(Bucket=pbucket, Key="uploads/cat.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {"origin": "form"}
    assert root.findtext("ETag") == head["ETag"]
    got = s3.get_object(Bucket=pbucket, Key="uploads/cat.jpg")["Body"].read()
    assert got == src.read_bytes()


def test_default_answer_is_204_and_redirect_is_303(gw, s3, pbucket, tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello form")
    p = policy(s3, pbucket, "plain.txt", [])
    status, _, body = post_form(gw, p["url"], p["fields"], src)
    assert status == 204, body
    assert s3.get_object(Bucket=pbucket, Key="plain.txt")["Body"].read() == b"hello form"
    back = "https://app.example.com/done?x=1"
    p = policy(
        s3,
        pbucket,
        "up/${filename}",
        [["starts-with", "$key", "up/"], {"success_action_redirect": back}],
        {"success_action_redirect": back},
    )
    status, h, _ = post_form(gw, p["url"], p["fields"], src, filename="b c.txt")
    assert status == 303
    loc = urllib.parse.urlsplit(h["location"])
    assert loc.netloc == "app.example.com" and loc.path == "/done"
    q = urllib.parse.parse_qs(loc.query)
    assert q["x"] == ["1"] and q["bucket"] == [pbucket] and q["key"] == ["up/b c.txt"]
    assert q["etag"] == [s3.head_object(Bucket=pbucket, Key="up/b c.txt")["ETag"]]


def assert_refused(s3, bucket, key, status, body, want_status, want_code, message_part=None):
    assert status == want_status, body
    assert xml_error_code(body) == want_code, body
    if message_part:
        assert message_part in body.decode(), body
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)


def test_content_length_range_violations(gw, s3, pbucket, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2048)
    p = policy(s3, pbucket, "uploads/big.bin", BASE_CONDITIONS, BASE_FIELDS)
    status, _, body = post_form(gw, p["url"], p["fields"], big)
    assert_refused(s3, pbucket, "uploads/big.bin", status, body, 400, "EntityTooLarge")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    p = policy(s3, pbucket, "uploads/empty.bin", BASE_CONDITIONS, BASE_FIELDS)
    status, _, body = post_form(gw, p["url"], p["fields"], empty)
    assert_refused(s3, pbucket, "uploads/empty.bin", status, body, 400, "EntityTooSmall")


def test_condition_violations_are_access_denied(gw, s3, pbucket, tmp_path):
    src = tmp_path / "f.jpg"
    src.write_bytes(b"jpeg")
    # starts-with: the form names a key outside the allowed prefix.
    p = policy(s3, pbucket, "uploads/ok.jpg", BASE_CONDITIONS, BASE_FIELDS)
    fields = dict(p["fields"], key="elsewhere/f.jpg")
    status, _, body = post_form(gw, p["url"], fields, src)
    assert_refused(s3, pbucket, "elsewhere/f.jpg", status, body, 403, "AccessDenied", "Invalid according to Policy")
    # eq: another Content-Type than the policy's.
    fields = dict(p["fields"], **{"Content-Type": "text/html"})
    status, _, body = post_form(gw, p["url"], fields, src)
    assert_refused(s3, pbucket, "uploads/ok.jpg", status, body, 403, "AccessDenied", "Invalid according to Policy")
    # A field the policy does not name.
    fields = dict(p["fields"], **{"x-amz-meta-extra": "1"})
    status, _, body = post_form(gw, p["url"], fields, src)
    assert_refused(s3, pbucket, "uploads/ok.jpg", status, body, 403, "AccessDenied")
    # A policy for another bucket.
    other = policy(s3, "some-other-bucket", "uploads/ok.jpg", [], {})
    status, _, body = post_form(gw, p["url"], other["fields"], src)
    assert status == 403 and xml_error_code(body) == "AccessDenied", body


def test_expired_policy_and_bad_signature(gw, s3, pbucket, tmp_path):
    src = tmp_path / "f.jpg"
    src.write_bytes(b"jpeg")
    p = policy(s3, pbucket, "uploads/late.jpg", BASE_CONDITIONS, BASE_FIELDS, expires=-60)
    status, _, body = post_form(gw, p["url"], p["fields"], src)
    assert_refused(s3, pbucket, "uploads/late.jpg", status, body, 403, "AccessDenied", "Policy expired")
    p = policy(s3, pbucket, "uploads/forged.jpg", BASE_CONDITIONS, BASE_FIELDS)
    fields = dict(p["fields"])
    fields["x-amz-signature"] = "0" * 64
    status, _, body = post_form(gw, p["url"], fields, src)
    assert_refused(s3, pbucket, "uploads/forged.jpg", status, body, 403, "SignatureDoesNotMatch")
